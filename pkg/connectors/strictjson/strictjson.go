// Package strictjson decodes an integration's config as the connectors
// want it read: one JSON object, no field the config type does not know
// (a misspelt field would otherwise be silently ignored), nothing after
// it. An empty or blank config decodes to the zero value.
package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
)

// Decode decodes raw into v. The caller words and classifies the error.
func Decode(raw []byte, v any) error {
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}
