package annotation

import (
	"context"

	"inthub.dev/pkg/bus"
)

// ReportFailure runs the worker's report of a failed delivery, as the bus
// worker does after it dead-lettered or spooled the message.
func (s *Service) ReportFailure(ctx context.Context, f bus.Failure) { s.onFailure(ctx, f) }
