package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"inthub.dev/schemas"
)

const (
	// SpecVersion is the CloudEvents version of every inthub event.
	SpecVersion = "1.0"
	// ContentTypeJSON is the only data content type inthub events carry.
	ContentTypeJSON = "application/json"
)

// Event is a CloudEvents 1.0 event in structured JSON mode. Type equals the
// NATS subject the event is published on; ID is also the Nats-Msg-Id, so
// JetStream drops a re-publish; Source + ID identify the event for
// consumers that deduplicate.
type Event struct {
	SpecVersion     string          `json:"specversion"`
	ID              string          `json:"id"`     // UUID, time-ordered (v7) when made by New
	Source          string          `json:"source"` // URI reference, e.g. "inthub/catalog"
	Type            string          `json:"type"`
	Time            time.Time       `json:"time"` // UTC
	DataContentType string          `json:"datacontenttype"`
	TenantID        string          `json:"tenantid,omitempty"`
	TraceParent     string          `json:"traceparent,omitempty"` // W3C trace context
	Data            json.RawMessage `json:"data"`
}

// ValidationError says why an event or its payload breaks the contract.
// Such an event is poison: retrying cannot fix it.
type ValidationError struct {
	// Field is the dotted path of the offending value in the event as JSON:
	// "specversion", "data.integration.tenantId",
	// "data.checkRun.annotations[0].level". Empty when the bytes are not
	// JSON at all.
	Field  string
	Reason string

	// cause holds every violation (schemas.FieldErrors, with Fields as
	// above) or the JSON error, for callers that want more than the first.
	cause error
}

func (e *ValidationError) Error() string {
	if e.Field == "" {
		return e.Reason
	}
	return e.Field + ": " + e.Reason
}

func (e *ValidationError) Unwrap() error { return e.cause }

// validator is the only package state: it is derived from embedded schemas
// alone and immutable once built, and compiling it once saves every event
// the few milliseconds that compiling costs.
var validator = sync.OnceValues(schemas.New)

// Validator returns the process-wide compiled schemas, for callers that
// validate other documents (such as a payload before it is wrapped) without
// compiling their own.
func Validator() (*schemas.Validator, error) {
	return validator()
}

// New builds and validates an event of type typ from source, carrying data
// (a payload value, or a json.RawMessage). The id is a UUIDv7, so ids sort
// by creation time; the time is now in UTC, to the millisecond, the
// precision of the id's clock. A payload that breaks its schema, or that
// belongs to another subject, yields a *ValidationError.
func New(typ, source, tenantID string, data any) (Event, error) {
	if subject, ok := subjectOf(data); ok && subject != typ {
		return Event{}, &ValidationError{Field: "type", Reason: fmt.Sprintf("is %q but the payload is %s", typ, subject)}
	}
	raw, err := marshalData(data)
	if err != nil {
		return Event{}, err
	}
	id, err := uuid.NewV7()
	if err != nil {
		return Event{}, fmt.Errorf("events: new id: %w", err)
	}
	e := Event{
		SpecVersion:     SpecVersion,
		ID:              id.String(),
		Source:          source,
		Type:            typ,
		Time:            time.Now().UTC().Truncate(time.Millisecond),
		DataContentType: ContentTypeJSON,
		TenantID:        tenantID,
		Data:            raw,
	}
	if err := e.Validate(); err != nil {
		return Event{}, err
	}
	return e, nil
}

// subjectOf reports the subject of a payload value or pointer. Subject has
// value receivers, so calling it through a nil pointer would panic; a nil
// pointer is left to encoding/json to refuse.
func subjectOf(x any) (string, bool) {
	p, ok := x.(Payload)
	if !ok {
		return "", false
	}
	if v := reflect.ValueOf(x); v.Kind() == reflect.Pointer && v.IsNil() {
		return "", false
	}
	return p.Subject(), true
}

func marshalData(data any) (json.RawMessage, error) {
	switch d := data.(type) {
	case json.RawMessage:
		// Copied so that the event does not change if the caller reuses
		// its buffer.
		return bytes.Clone(d), nil
	case []byte:
		// encoding/json would send these as a base64 string.
		return nil, &ValidationError{Field: "data", Reason: "[]byte is ambiguous: pass json.RawMessage for JSON, or a payload value"}
	}
	b, err := marshal(data)
	if err != nil {
		return nil, &ValidationError{Field: "data", Reason: "cannot encode as JSON: " + err.Error(), cause: err}
	}
	return b, nil
}

// marshal leaves <, > and & unescaped: events are not embedded in HTML, and
// the escapes only make messages harder to read in the nats CLI.
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// Marshal encodes the event as it goes on the wire. It does not validate:
// New and Parse already have, and Validate is there for events changed
// since.
func (e Event) Marshal() ([]byte, error) {
	return marshal(e)
}

// Validate checks the event as it would be sent: the envelope, the data
// against the schema of its type, and that the envelope's tenant matches
// the payload's. It checks the same document Parse would see after
// Marshal, without encoding and decoding the whole event: publishers call
// it for every event.
func (e Event) Validate() error {
	if len(e.Data) == 0 {
		return &ValidationError{Field: "data", Reason: "required"}
	}
	data, err := decodeJSON(e.Data)
	if err != nil {
		return &ValidationError{Field: "data", Reason: "not valid JSON", cause: err}
	}
	if y := e.Time.Year(); y < 0 || y > 9999 {
		// What Marshal would refuse.
		return &ValidationError{Field: "time", Reason: "cannot encode: year outside 0-9999"}
	}
	// The attributes as Marshal writes them (tenantid and traceparent are
	// omitted when empty).
	doc := map[string]any{
		"specversion":     e.SpecVersion,
		"id":              e.ID,
		"source":          e.Source,
		"type":            e.Type,
		"time":            e.Time.Format(time.RFC3339Nano),
		"datacontenttype": e.DataContentType,
		"data":            data,
	}
	if e.TenantID != "" {
		doc["tenantid"] = e.TenantID
	}
	if e.TraceParent != "" {
		doc["traceparent"] = e.TraceParent
	}
	return validateDoc(doc, e.Type, e.TenantID)
}

// validateDoc checks a decoded event: the envelope, then data against the
// schema of typ, then the tenant.
func validateDoc(doc map[string]any, typ, tenantID string) error {
	v, err := validator()
	if err != nil {
		return fmt.Errorf("events: schemas: %w", err)
	}
	if err := v.Validate("envelope", doc); err != nil {
		return validationError("", err)
	}
	data, _ := doc["data"].(map[string]any)
	return validateData(v, typ, tenantID, data)
}

// validateData checks data against the schema of typ (if there is one) and
// against the envelope's tenant.
func validateData(v *schemas.Validator, typ, tenantID string, data map[string]any) error {
	if v.Has(typ) {
		if err := v.Validate(typ, data); err != nil {
			return validationError("data", err)
		}
	}
	return checkTenant(tenantID, data)
}

// Parse decodes and validates an event in structured JSON mode. The envelope
// must be exactly the attributes of Event; data is checked against the
// schema of the event's type, or only for being a JSON object when the type
// has no schema here. Every contract failure is a *ValidationError.
func Parse(b []byte) (Event, error) {
	doc, err := decodeJSON(b)
	if err != nil {
		return Event{}, &ValidationError{Reason: "not a JSON document: " + err.Error(), cause: err}
	}
	v, err := validator()
	if err != nil {
		return Event{}, fmt.Errorf("events: schemas: %w", err)
	}
	if err := v.Validate("envelope", doc); err != nil {
		return Event{}, validationError("", err)
	}

	// The envelope is valid, so every attribute is a string of the right
	// form; decoding into a struct only keeps data's bytes as they came.
	var w struct {
		SpecVersion     string          `json:"specversion"`
		ID              string          `json:"id"`
		Source          string          `json:"source"`
		Type            string          `json:"type"`
		Time            string          `json:"time"`
		DataContentType string          `json:"datacontenttype"`
		TenantID        string          `json:"tenantid"`
		TraceParent     string          `json:"traceparent"`
		Data            json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return Event{}, &ValidationError{Reason: err.Error(), cause: err}
	}
	t, err := time.Parse(time.RFC3339Nano, w.Time)
	if err != nil {
		// The schema's date-time admits a leap second, which Go cannot hold.
		return Event{}, &ValidationError{Field: "time", Reason: "not a valid time: " + err.Error(), cause: err}
	}
	data := doc.(map[string]any)["data"].(map[string]any)
	if err := validateData(v, w.Type, w.TenantID, data); err != nil {
		return Event{}, err
	}
	return Event{
		SpecVersion:     w.SpecVersion,
		ID:              w.ID,
		Source:          w.Source,
		Type:            w.Type,
		Time:            t,
		DataContentType: w.DataContentType,
		TenantID:        w.TenantID,
		TraceParent:     w.TraceParent,
		Data:            w.Data,
	}, nil
}

// checkTenant keeps the envelope's tenant, which consumers and DLQ filters
// read without decoding data, from disagreeing with the payload's.
func checkTenant(tenantID string, data map[string]any) error {
	inData, at := "", ""
	if s, ok := data["tenantId"].(string); ok {
		inData, at = s, "data.tenantId"
	} else if in, ok := data["integration"].(map[string]any); ok {
		if s, ok := in["tenantId"].(string); ok {
			inData, at = s, "data.integration.tenantId"
		}
	}
	switch {
	case inData == "" || inData == tenantID:
		return nil
	case tenantID == "":
		return &ValidationError{Field: "tenantid", Reason: "required: the payload has " + at}
	default:
		return &ValidationError{Field: "tenantid", Reason: "must equal " + at}
	}
}

// decodeJSON decodes one JSON value, keeping numbers exact for the schema's
// integer checks.
func decodeJSON(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the JSON value")
	}
	return doc, nil
}

// validationError turns the schemas' violations into a ValidationError on
// the first, with every Field rooted at prefix.
func validationError(prefix string, err error) error {
	var fes schemas.FieldErrors
	if !errors.As(err, &fes) || len(fes) == 0 {
		return err
	}
	rooted := make(schemas.FieldErrors, len(fes))
	for i, fe := range fes {
		rooted[i] = &schemas.FieldError{Field: joinField(prefix, fe.Field), Reason: fe.Reason}
	}
	return &ValidationError{Field: rooted[0].Field, Reason: rooted[0].Reason, cause: rooted}
}

func joinField(prefix, field string) string {
	switch {
	case prefix == "":
		return field
	case field == "":
		return prefix
	case strings.HasPrefix(field, "["):
		return prefix + field
	default:
		return prefix + "." + field
	}
}

// Decode decodes the event's data into v, a pointer to a payload type.
// Fields that v does not have are refused rather than dropped, and a
// payload type of another subject is refused, since two subjects may share
// a shape. Failures are *ValidationError.
func (e Event) Decode(v any) error {
	if subject, ok := subjectOf(v); ok && subject != e.Type {
		return &ValidationError{Field: "type", Reason: fmt.Sprintf("is %q, cannot decode into the payload of %s", e.Type, subject)}
	}
	dec := json.NewDecoder(bytes.NewReader(e.Data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return &ValidationError{Field: "data", Reason: "data after the JSON value"}
	}
	return nil
}

func decodeError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return &ValidationError{
			Field:  joinField("data", te.Field),
			Reason: fmt.Sprintf("cannot decode JSON %s into Go %s", te.Value, te.Type),
			cause:  err,
		}
	}
	// encoding/json has no type for this one.
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		if n, uerr := strconv.Unquote(name); uerr == nil {
			name = n
		}
		return &ValidationError{Field: joinField("data", name), Reason: "unknown field", cause: err}
	}
	var ie *json.InvalidUnmarshalError
	if errors.As(err, &ie) {
		return fmt.Errorf("events: Decode: %w", err)
	}
	return &ValidationError{Field: "data", Reason: err.Error(), cause: err}
}

// IntegrationID returns the integration an event is about, for logs,
// headers and per-integration breakers: data.integrationId, else
// data.integration.id, else data.id for integration.deleted; "" if none.
// It decodes only those fields.
func (e Event) IntegrationID() string {
	var p struct {
		IntegrationID string `json:"integrationId"`
		Integration   struct {
			ID string `json:"id"`
		} `json:"integration"`
		ID string `json:"id"`
	}
	// A type error still fills the other fields; a syntax error leaves all
	// empty, which is the right answer for data that is not JSON.
	_ = json.Unmarshal(e.Data, &p)
	switch {
	case p.IntegrationID != "":
		return p.IntegrationID
	case p.Integration.ID != "":
		return p.Integration.ID
	case e.Type == SubjectIntegrationDeleted:
		return p.ID
	}
	return ""
}
