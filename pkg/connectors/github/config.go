package github

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	"inthub.dev/pkg/authref"
	"inthub.dev/pkg/connectors/strictjson"
	"inthub.dev/pkg/fault"
)

const (
	defaultTimeout = 30 * time.Second
	maxTimeout     = 300 * time.Second
)

// config is the integration's config, as schemas/config/scm.github.json
// describes it. Secret fields hold AuthRef URIs, never the secret.
type config struct {
	Endpoint              string `json:"endpoint"`
	AppID                 int64  `json:"appId"`
	InstallationID        int64  `json:"installationId"`
	PrivateKey            string `json:"privateKey"`
	WebhookSecret         string `json:"webhookSecret"`
	Organization          string `json:"organization"`
	TimeoutSeconds        int    `json:"timeoutSeconds"`
	HealthIntervalSeconds int    `json:"healthIntervalSeconds"`
}

var orgLogin = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$`)

// decodeConfig rejects unknown fields, as the schema does
// (additionalProperties: false): a misspelt "installationID" must not be
// silently ignored and leave the id at zero.
func decodeConfig(raw json.RawMessage) (config, error) {
	var c config
	if len(bytes.TrimSpace(raw)) == 0 {
		return c, fault.Permanentf("scm.github: the config is empty: appId, installationId and privateKey are required")
	}
	if err := strictjson.Decode(raw, &c); err != nil {
		return c, fault.Permanent(fmt.Errorf("scm.github: config: %w", err))
	}
	// encoding/json matches keys case-insensitively: "installationID"
	// would fill installationId, and {"appId":1,"APPID":2} would take the
	// last. The schema is case-sensitive, so the decoder must be too.
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(raw, &keys); err != nil {
		return c, fault.Permanent(fmt.Errorf("scm.github: config: %w", err))
	}
	for k := range keys {
		if !slices.Contains(configKeys, k) {
			return c, fault.Permanentf("scm.github: config: unknown field %q (the fields are %s)", k, strings.Join(configKeys, ", "))
		}
	}
	return c, nil
}

// configKeys are config's JSON names, exactly.
var configKeys = func() []string {
	t := reflect.TypeFor[config]()
	keys := make([]string, 0, t.NumField())
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		keys = append(keys, name)
	}
	return keys
}()

// validate checks the config without network calls. authRef is the
// integration's own AuthRef, used for the private key when the config
// names none. Messages name the field and never echo a secret field's
// value (it may be a key pasted in clear).
func (c config) validate(authRef string) error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if _, err := normalize(c.Endpoint); err != nil {
		add("endpoint: %w", err)
	}
	if c.AppID < 1 {
		add("appId: must be a positive integer (the GitHub App's id)")
	}
	if c.InstallationID < 1 {
		add("installationId: must be a positive integer (the installation's id)")
	}
	switch ref := c.keyRef(authRef); {
	case ref == "":
		add("privateKey: required: the AuthRef URI of the app's PEM private key (%s)", authref.Forms)
	default:
		if _, err := authref.Parse(ref); err != nil {
			add("privateKey: %w (the key itself belongs in the store the AuthRef names)", err)
		}
	}
	if c.WebhookSecret != "" {
		if _, err := authref.Parse(c.WebhookSecret); err != nil {
			add("webhookSecret: %w (the secret itself belongs in the store the AuthRef names)", err)
		}
	}
	if c.Organization != "" && !orgLogin.MatchString(c.Organization) {
		add("organization: must be a GitHub organisation login")
	}
	if c.TimeoutSeconds != 0 && (c.TimeoutSeconds < 1 || time.Duration(c.TimeoutSeconds)*time.Second > maxTimeout) {
		add("timeoutSeconds: must be between 1 and %d", int(maxTimeout/time.Second))
	}
	if c.HealthIntervalSeconds != 0 && (c.HealthIntervalSeconds < 30 || c.HealthIntervalSeconds > 86400) {
		add("healthIntervalSeconds: must be between 30 and 86400")
	}
	if len(errs) == 0 {
		return nil
	}
	return fault.Permanent(fmt.Errorf("scm.github: %w", errors.Join(errs...)))
}

// keyRef is the AuthRef of the app's private key: the config's
// privateKey, else the integration's AuthRef.
func (c config) keyRef(authRef string) string {
	if c.PrivateKey != "" {
		return c.PrivateKey
	}
	return authRef
}

func (c config) timeout() time.Duration {
	if c.TimeoutSeconds <= 0 {
		return defaultTimeout
	}
	return min(time.Duration(c.TimeoutSeconds)*time.Second, maxTimeout)
}
