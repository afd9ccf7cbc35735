package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"

	"github.com/danielgtaylor/huma/v2"

	"inthub.dev/services/catalog/configcheck"
	"inthub.dev/services/catalog/store"
)

// Locations of the fields that problem documents name.
const (
	locIfMatch        = "header.If-Match"
	locIdempotencyKey = "header.Idempotency-Key"
	locCursor         = "query.cursor"
)

// problem returns an RFC 9457 problem (huma's ErrorModel) naming one field.
func problem(status int, detail, location, message string) error {
	return huma.NewError(status, detail, &huma.ErrorDetail{Location: location, Message: message})
}

// scrubProblem removes the request values that huma copies into error
// details (for a body that does not parse, the whole body) before a problem
// document is written: a config or an AuthRef may be secret, and a problem
// document ends up in logs and tickets. A 5xx also loses its details,
// which would otherwise carry the text of an internal error.
func scrubProblem(_ huma.Context, status string, v any) (any, error) {
	em, ok := v.(*huma.ErrorModel)
	if !ok {
		return v, nil
	}
	out := *em
	if strings.HasPrefix(status, "5") {
		out.Errors = nil
		if out.Detail != "" {
			out.Detail = "internal error"
		}
		return &out, nil
	}
	out.Errors = make([]*huma.ErrorDetail, 0, len(em.Errors))
	for _, d := range em.Errors {
		if d == nil {
			continue
		}
		out.Errors = append(out.Errors, &huma.ErrorDetail{Location: d.Location, Message: d.Message})
	}
	return &out, nil
}

// fail turns an error from the store or the config checker into a problem;
// what it does not recognise is logged and answered with a bare 500.
func (s *server) fail(ctx context.Context, err error, attrs ...slog.Attr) error {
	var (
		fes configcheck.FieldErrors
		fe  *configcheck.FieldError
		ce  *store.ConflictError
		ie  *store.InvalidError
		se  huma.StatusError
	)
	switch {
	case errors.As(err, &se):
		return err
	case errors.As(err, &fes):
		return fieldProblem(fes, "body.")
	case errors.As(err, &fe):
		return fieldProblem(configcheck.FieldErrors{fe}, "body.")
	case errors.Is(err, store.ErrNotFound):
		// Missing, deleted, another tenant's or malformed: one answer.
		return problem(http.StatusNotFound, "not found", "path.id", "no such resource")
	case errors.As(err, &ce):
		if ce.Field == "type" {
			return problem(http.StatusConflict, "an integration's type cannot change", "body.type",
				"differs from the integration's type")
		}
		return problem(http.StatusConflict, "the value is already taken", "body."+ce.Field,
			"already used by another live entry of this tenant")
	case errors.Is(err, store.ErrVersionMismatch):
		return problem(http.StatusPreconditionFailed, "the resource has changed since it was read",
			locIfMatch, "does not match the current version; read it again and retry")
	case errors.Is(err, store.ErrUnknownType):
		return problem(http.StatusUnprocessableEntity, "unknown integration type", "body.type",
			"no such integration type; see GET /api/v1/integration-types")
	case errors.Is(err, store.ErrIdempotencyMismatch):
		return problem(http.StatusUnprocessableEntity, "the Idempotency-Key was used for a different request",
			locIdempotencyKey, "already used with a different request body; use a new key")
	case errors.Is(err, store.ErrBadCursor):
		return problem(http.StatusBadRequest, "bad cursor", locCursor,
			"not a cursor from a previous page; start again without it")
	case errors.As(err, &ie):
		if ie.Field == "Idempotency-Key" {
			return problem(http.StatusUnprocessableEntity, "invalid input", locIdempotencyKey, ie.Reason)
		}
		return problem(http.StatusUnprocessableEntity, "invalid input", "body."+ie.Field, ie.Reason)
	case errors.Is(err, context.Canceled):
		// The client went away; nobody reads the answer.
		return huma.NewError(http.StatusServiceUnavailable, "request canceled")
	}
	s.log.ErrorContext(ctx, "catalog api: request failed", append([]any{slog.String("error", err.Error())}, attrsAny(attrs)...)...)
	return huma.Error500InternalServerError("internal error")
}

func attrsAny(attrs []slog.Attr) []any {
	out := make([]any, len(attrs))
	for i, a := range attrs {
		out[i] = a
	}
	return out
}

// fieldProblem is a 422 naming every refused field, each located at
// prefix + its field path (configcheck's paths start at the body:
// "config.password", "authRef").
func fieldProblem(fes configcheck.FieldErrors, prefix string) error {
	details := make([]error, 0, len(fes))
	for _, fe := range fes {
		if fe == nil {
			continue
		}
		details = append(details, &huma.ErrorDetail{Location: prefix + fe.Field, Message: fe.Reason})
	}
	return huma.NewError(http.StatusUnprocessableEntity, "the request is not valid: see errors", details...)
}
