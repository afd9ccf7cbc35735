package plugin

import (
	"context"
	"errors"
	"time"
)

// Watch runs Discover now and then every interval until ctx ends, for a
// process that uses plugins without recording them (the health poller,
// the annotation worker): their registry follows the directories within
// an interval of a change. A failed scan is logged and retried at the
// next tick. It returns ctx's error, or ErrClosed after Close.
func (h *Host) Watch(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		interval = time.Minute
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		rep, err := h.Discover(ctx)
		switch {
		case errors.Is(err, ErrClosed):
			return err
		case err != nil:
			h.log.Warn("plugin scan failed; retrying at the next tick", "error", err.Error(), "in", interval)
		case len(rep.Registered)+len(rep.Unregistered) > 0:
			h.log.Info("plugins changed", "loaded", len(rep.Plugins), "registered", len(rep.Registered),
				"unregistered", len(rep.Unregistered), "refused", len(rep.Refused))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}
