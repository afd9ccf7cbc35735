package vaultapi

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"inthub.dev/pkg/fault"
)

// State is what GET /v1/sys/health says of the node, by its status code.
type State string

const (
	StateActive         State = "active"              // 200: initialised, unsealed, active
	StateStandby        State = "standby"             // 429: unsealed standby
	StateDRSecondary    State = "dr_secondary"        // 472: disaster-recovery secondary
	StatePerfStandby    State = "performance_standby" // 473: performance standby
	StateNotInitialized State = "not_initialized"     // 501
	StateSealed         State = "sealed"              // 503
	StateUnknown        State = "unknown"
)

// stateOf maps sys/health's documented codes.
var stateOf = map[int]State{
	200: StateActive,
	429: StateStandby,
	472: StateDRSecondary,
	473: StatePerfStandby,
	501: StateNotInitialized,
	503: StateSealed,
}

// Health is the answer of GET /v1/sys/health.
type Health struct {
	Code               int    `json:"-"`
	State              State  `json:"-"`
	Initialized        bool   `json:"initialized"`
	Sealed             bool   `json:"sealed"`
	Standby            bool   `json:"standby"`
	PerformanceStandby bool   `json:"performance_standby"`
	ReplicationDRMode  string `json:"replication_dr_mode"`
	Version            string `json:"version"`
	ClusterName        string `json:"cluster_name"`
	ServerTimeUTC      int64  `json:"server_time_utc"`
}

// Health reads GET /v1/sys/health (unauthenticated). Each documented
// status (200, 429, 472, 473, 501, 503) is an answer, not an error: the
// caller decides what a standby or a sealed node means to it. Another
// status, or a body that is not a health document, is an error.
func (c *Client) Health(ctx context.Context) (Health, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var h Health
	const p = "/v1/sys/health"
	resp, body, err := c.request(ctx, http.MethodGet, p, "", false, nil)
	if err != nil {
		return h, err
	}
	state, known := stateOf[resp.StatusCode]
	isDoc := json.Unmarshal(body, &h) == nil && bytes.Contains(body, []byte(`"initialized"`))
	switch {
	case known && isDoc:
	case resp.StatusCode != http.StatusOK:
		// 429 without a health document is a rate limit (of a proxy:
		// Vault's own quotas exempt sys/health), 503 one of maintenance.
		return Health{}, statusError("reading "+p, resp)
	default:
		return Health{}, fault.Permanentf("vault answered %d reading %s with something that is not a health document (is the address a Vault?)", resp.StatusCode, p)
	}
	h.Code, h.State = resp.StatusCode, state
	return h, nil
}

// SealStatus is the answer of GET /v1/sys/seal-status.
type SealStatus struct {
	Type        string `json:"type"`
	Initialized bool   `json:"initialized"`
	Sealed      bool   `json:"sealed"`
	T           int    `json:"t"` // unseal threshold
	N           int    `json:"n"` // key shares
	Progress    int    `json:"progress"`
	Version     string `json:"version"`
	ClusterName string `json:"cluster_name"`
	StorageType string `json:"storage_type"`
}

// SealStatus reads GET /v1/sys/seal-status (unauthenticated).
func (c *Client) SealStatus(ctx context.Context) (SealStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var s SealStatus
	const p = "/v1/sys/seal-status"
	resp, body, err := c.request(ctx, http.MethodGet, p, "", false, nil)
	if err != nil {
		return s, err
	}
	if resp.StatusCode != http.StatusOK {
		return s, statusError("reading "+p, resp)
	}
	if err := json.Unmarshal(body, &s); err != nil || !bytes.Contains(body, []byte(`"sealed"`)) {
		return s, fault.Permanentf("vault answered %s with something that is not a seal status (is the address a Vault?)", p)
	}
	return s, nil
}

// TokenInfo is what GET /v1/auth/token/lookup-self says of the token in
// use. The token itself (the answer's "id") is not kept.
type TokenInfo struct {
	DisplayName string
	Policies    []string
	// TTL is what is left of the token's lease; zero for a token without
	// one (a root token).
	TTL       time.Duration
	Renewable bool
	// ExpireTime is the lease's end, zero without one.
	ExpireTime time.Time
	Orphan     bool
}

// LookupSelf reads the token's own record.
func (c *Client) LookupSelf(ctx context.Context) (TokenInfo, error) {
	var ti TokenInfo
	body, err := c.Get(ctx, "/v1/auth/token/lookup-self")
	if err != nil {
		return ti, err
	}
	defer clear(body)
	var doc struct {
		Data *struct {
			DisplayName string   `json:"display_name"`
			Policies    []string `json:"policies"`
			TTL         int64    `json:"ttl"`
			Renewable   bool     `json:"renewable"`
			ExpireTime  *string  `json:"expire_time"`
			Orphan      bool     `json:"orphan"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &doc); err != nil || doc.Data == nil {
		return ti, fault.Permanentf("vault's answer to token lookup-self has no data")
	}
	d := doc.Data
	ti = TokenInfo{DisplayName: d.DisplayName, Policies: d.Policies, TTL: time.Duration(d.TTL) * time.Second,
		Renewable: d.Renewable, Orphan: d.Orphan}
	if d.ExpireTime != nil && *d.ExpireTime != "" {
		if t, err := time.Parse(time.RFC3339Nano, *d.ExpireTime); err == nil {
			ti.ExpireTime = t.UTC()
		}
	}
	slices.Sort(ti.Policies)
	return ti, nil
}

// Mount is a secrets engine mount.
type Mount struct {
	// Path is the mount's path without its trailing slash ("secret").
	Path        string
	Type        string // "kv", "pki", "transit", ...
	Description string
	// Version is the KV version (1 or 2) from the mount's options; 0 for
	// another engine. A kv mount without the option is version 1.
	Version int
}

// Mounts lists the secrets engines (GET /v1/sys/mounts, which needs a
// policy with read on sys/mounts), sorted by path.
func (c *Client) Mounts(ctx context.Context) ([]Mount, error) {
	body, err := c.Get(ctx, "/v1/sys/mounts")
	if err != nil {
		return nil, err
	}
	type entry struct {
		Type        string            `json:"type"`
		Description string            `json:"description"`
		Options     map[string]string `json:"options"`
	}
	// Vault answers the mounts both under "data" and, for older clients,
	// at the top level beside request_id and the like.
	var doc struct {
		Data map[string]json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fault.Permanentf("vault's answer to sys/mounts is not JSON")
	}
	raw := doc.Data
	if len(raw) == 0 {
		if err := json.Unmarshal(body, &raw); err != nil {
			return nil, fault.Permanentf("vault's answer to sys/mounts is not a mount table")
		}
	}
	out := make([]Mount, 0, len(raw))
	for path, r := range raw {
		if !strings.HasSuffix(path, "/") {
			continue // request_id, lease_id, ...
		}
		var e entry
		if json.Unmarshal(r, &e) != nil || e.Type == "" {
			continue
		}
		m := Mount{Path: strings.TrimSuffix(path, "/"), Type: e.Type, Description: e.Description}
		if e.Type == "kv" || e.Type == "generic" {
			m.Version = 1
			if v, err := strconv.Atoi(e.Options["version"]); err == nil && v >= 1 {
				m.Version = v
			}
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b Mount) int { return strings.Compare(a.Path, b.Path) })
	return out, nil
}

// ReadKV reads the secret at path of a KV mount of the given version
// (1: /v1/<mount>/<path>; 2: /v1/<mount>/data/<path>, its current
// version) and returns its fields. The caller clears the values. No error
// quotes the answer: it holds the secret.
func (c *Client) ReadKV(ctx context.Context, mount, path string, version int) (map[string]json.RawMessage, error) {
	if !CleanPath(mount) || !CleanPath(path) {
		return nil, fault.Permanentf("a KV path needs a mount and a path of [A-Za-z0-9._-] segments")
	}
	p := "/v1/" + mount + "/" + path
	switch version {
	case 1:
	case 2:
		p = "/v1/" + mount + "/data/" + path
	default:
		return nil, fault.Permanentf("KV version %d: must be 1 or 2", version)
	}
	body, err := c.Get(ctx, p)
	if err != nil {
		return nil, err
	}
	defer clear(body)
	if version == 1 {
		var doc struct {
			Data map[string]json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(body, &doc); err != nil || doc.Data == nil {
			return nil, fault.Permanentf("vault's answer reading %s is not a KV secret", p)
		}
		return doc.Data, nil
	}
	var doc struct {
		Data *struct {
			Data     map[string]json.RawMessage `json:"data"`
			Metadata json.RawMessage            `json:"metadata"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &doc); err != nil || doc.Data == nil || doc.Data.Metadata == nil {
		return nil, fault.Permanentf("vault's answer reading %s is not a KV version 2 secret (is the mount KV version 1?)", p)
	}
	if doc.Data.Data == nil {
		// KV v2 answers a deleted version with data: null.
		return nil, fault.Permanentf("reading %s: the secret's current version is deleted or destroyed", p)
	}
	return doc.Data.Data, nil
}

// Field picks one field out of a KV secret's fields: a string as its
// text, anything else as its JSON text.
func Field(fields map[string]json.RawMessage, name string) ([]byte, error) {
	raw, ok := fields[name]
	if !ok || string(raw) == "null" {
		return nil, fault.Permanentf("the secret has no field %q", name)
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, fault.Permanentf("field %q is not a valid JSON string", name)
		}
		if s == "" {
			return nil, fault.Permanentf("field %q is empty", name)
		}
		return []byte(s), nil
	}
	return bytes.Clone(raw), nil
}

// ClearFields zeroes the values of a secret's fields.
func ClearFields(fields map[string]json.RawMessage) {
	for _, v := range fields {
		clear(v)
	}
}
