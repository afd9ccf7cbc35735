package vault

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/vault/vaultapi"
	"inthub.dev/pkg/fault"
)

// shortTTL is how close to its end a token that cannot be renewed makes
// the integration degraded, so that someone issues a new one in time.
const shortTTL = 24 * time.Hour

// TestConnection runs, one Check each: the node's health, its seal
// status, an AppRole login (AppRole only), the token's own record and the
// KV mounts. TestConnection fails on the first four; a token that may not
// read sys/mounts leaves it degraded (discovery fails, the rest works).
func (c *Connector) TestConnection(ctx context.Context) connectors.Result {
	return c.probe(ctx, true)
}

// CheckHealth is the periodic check: health, seal status and the token.
func (c *Connector) CheckHealth(ctx context.Context) connectors.Result {
	return c.probe(ctx, false)
}

type run struct {
	checks  []connectors.Check
	details map[string]string
	expiry  *time.Time
	warn    []string
}

func (r *run) add(ck connectors.Check) bool {
	r.checks = append(r.checks, ck)
	return ck.OK
}

func (r *run) skip(why string, capabilities ...string) {
	for _, cp := range capabilities {
		r.checks = append(r.checks, connectors.Check{Capability: cp, Message: "not run: " + why})
	}
}

func (c *Connector) probe(ctx context.Context, full bool) connectors.Result {
	start := time.Now()
	if c.invalid != nil {
		return connectors.FailedResult(start, "config", c.invalid)
	}
	r := &run{details: map[string]string{"address": c.api.Address()}}
	if c.conf.Namespace != "" {
		r.details["namespace"] = c.conf.Namespace
	}
	rest := []string{CheckSeal, CheckToken}
	if full {
		rest = []string{CheckSeal, CheckAuth, CheckToken, CheckKVMounts}
	}
	if c.conf.ProbeSecret != "" {
		rest = append(rest, CheckKVRead)
	}
	var state vaultapi.State
	healthy := r.add(connectors.RunCheck(ctx, CheckHealth, func(ctx context.Context) (string, error) {
		msg, st, err := c.health(ctx, r)
		state = st
		return msg, err
	}))
	if !healthy && (state == "" || state == vaultapi.StateUnknown) {
		// Nothing answered as a Vault: every other call would fail
		// the same way, each costing up to the timeout.
		r.skip("Vault did not answer its health endpoint", rest...)
		return c.finish(ctx, start, r, full)
	}
	r.add(connectors.RunCheck(ctx, CheckSeal, func(ctx context.Context) (string, error) { return c.seal(ctx, r) }))
	if !healthy {
		r.skip("the node cannot serve requests ("+string(state)+")", rest[1:]...)
		return c.finish(ctx, start, r, full)
	}
	if full && c.conf.Auth.appRole() {
		if !r.add(connectors.RunCheck(ctx, CheckAuth, c.login)) {
			r.skip("the AppRole login failed", rest[2:]...)
			return c.finish(ctx, start, r, full)
		}
	} else if full {
		r.add(connectors.Check{Capability: CheckAuth, OK: true, Message: "token authentication (no login needed)"})
	}
	if !r.add(connectors.RunCheck(ctx, CheckToken, func(ctx context.Context) (string, error) { return c.token(ctx, r) })) {
		r.skip("the token was refused", rest[slices.Index(rest, CheckToken)+1:]...)
		return c.finish(ctx, start, r, full)
	}
	if full {
		r.add(connectors.RunCheck(ctx, CheckKVMounts, func(ctx context.Context) (string, error) {
			ms, err := c.kvMounts(ctx)
			if err != nil {
				return "", err
			}
			names := make([]string, 0, len(ms))
			for _, m := range ms {
				names = append(names, m.Path+" (v"+strconv.Itoa(m.Version)+")")
			}
			r.details["kvMounts"] = strings.Join(names, ",")
			if len(ms) == 0 {
				return "no KV mount is enabled", nil
			}
			return fmt.Sprintf("%d KV mounts: %s", len(ms), strings.Join(names, ", ")), nil
		}))
	}
	if c.conf.ProbeSecret != "" {
		r.add(connectors.RunCheck(ctx, CheckKVRead, c.readProbe))
	}
	return c.finish(ctx, start, r, full)
}

func (c *Connector) finish(ctx context.Context, start time.Time, r *run, full bool) connectors.Result {
	critical := []string{CheckHealth, CheckSeal, CheckAuth, CheckToken, CheckKVRead}
	res := connectors.NewResult(r.checks, start, critical...)
	res.Details, res.CredentialExpiry = r.details, r.expiry
	if res.Status == connectors.StatusHealthy && len(r.warn) > 0 {
		res.Status = connectors.StatusDegraded
		res.Message += "; " + strings.Join(r.warn, "; ")
	}
	op := "health_check"
	if full {
		op = "test_connection"
	}
	lvl := c.log.DebugContext
	if res.Status != connectors.StatusHealthy {
		lvl = c.log.WarnContext
	}
	lvl(ctx, "vault check", "operation", op, "status", res.Status, "class", res.Class.String(), "message", res.Message)
	return res
}

// health reads sys/health and says what the node's state means for the
// integration.
func (c *Connector) health(ctx context.Context, r *run) (string, vaultapi.State, error) {
	h, err := c.api.Health(ctx)
	if err != nil {
		return "", vaultapi.StateUnknown, c.wrap("read sys/health", err)
	}
	r.details["state"] = string(h.State)
	r.details["version"] = h.Version
	if h.ClusterName != "" {
		r.details["cluster"] = h.ClusterName
	}
	v := "Vault " + h.Version
	switch h.State {
	case vaultapi.StateActive:
		return v + ": active, unsealed", h.State, nil
	case vaultapi.StateStandby:
		// Vault forwards a standby's requests to the active node.
		return v + ": unsealed standby (requests are forwarded to the active node)", h.State, nil
	case vaultapi.StatePerfStandby:
		return v + ": performance standby (reads served locally, writes forwarded)", h.State, nil
	case vaultapi.StateDRSecondary:
		return "", h.State, c.wrap("read sys/health", fault.Permanentf(
			"%s is a disaster-recovery secondary, which serves no secrets: point the address at the primary cluster", v))
	case vaultapi.StateNotInitialized:
		return "", h.State, c.wrap("read sys/health", fault.Permanentf(
			"%s is not initialised (vault operator init), or the address is a new, empty cluster", v))
	case vaultapi.StateSealed:
		// Sealed stays sealed until an operator unseals it: the
		// integration is offline, not failing for a moment.
		return "", h.State, c.wrap("read sys/health", fault.Offline(fmt.Errorf(
			"%s is sealed: it serves nothing until it is unsealed (vault operator unseal)", v)))
	}
	return "", vaultapi.StateUnknown, c.wrap("read sys/health", fault.Transient(errors.New("vault reported an unknown state")))
}

func (c *Connector) seal(ctx context.Context, r *run) (string, error) {
	s, err := c.api.SealStatus(ctx)
	if err != nil {
		return "", c.wrap("read sys/seal-status", err)
	}
	r.details["sealType"] = s.Type
	r.details["storage"] = s.StorageType
	if !s.Initialized {
		return "", c.wrap("read sys/seal-status", fault.Permanentf("not initialised (vault operator init)"))
	}
	if s.Sealed {
		return "", c.wrap("read sys/seal-status", fault.Offline(fmt.Errorf(
			"sealed (%s seal, unseal progress %d of %d keys)", s.Type, s.Progress, s.T)))
	}
	return fmt.Sprintf("unsealed (%s seal, threshold %d of %d)", s.Type, s.T, s.N), nil
}

func (c *Connector) login(ctx context.Context) (string, error) {
	end, err := c.api.Login(ctx)
	if err != nil {
		return "", c.wrap("log in with AppRole", err)
	}
	mount := c.conf.Auth.Mount
	if mount == "" {
		mount = vaultapi.DefaultAppRoleMount
	}
	if end.IsZero() {
		return "logged in at auth/" + mount + " (the token does not expire)", nil
	}
	return "logged in at auth/" + mount + "; token lease until " + end.UTC().Format(time.RFC3339), nil
}

func (c *Connector) token(ctx context.Context, r *run) (string, error) {
	ti, err := c.api.LookupSelf(ctx)
	if err != nil {
		return "", c.wrap("look up the token", err)
	}
	r.details["policies"] = strings.Join(ti.Policies, ",")
	r.details["renewable"] = strconv.FormatBool(ti.Renewable)
	if ti.TTL <= 0 {
		r.details["ttl"] = "none"
		return "token accepted (no TTL), policies " + strings.Join(ti.Policies, ", "), nil
	}
	r.details["ttl"] = ti.TTL.String()
	if !ti.ExpireTime.IsZero() {
		exp := ti.ExpireTime
		r.expiry = &exp
	}
	// An AppRole token is replaced by logging in again; a configured
	// token that cannot be renewed simply stops working.
	if !c.conf.Auth.appRole() && !ti.Renewable && ti.TTL < shortTTL {
		r.warn = append(r.warn, fmt.Sprintf("the token expires in %s and cannot be renewed: issue a new one", ti.TTL.Round(time.Minute)))
	}
	return fmt.Sprintf("token accepted, TTL %s, renewable %t, policies %s", ti.TTL.Round(time.Second), ti.Renewable,
		strings.Join(ti.Policies, ", ")), nil
}

// readProbe reads the probe secret and drops its values: the check says
// how many fields it has, never what they hold.
func (c *Connector) readProbe(ctx context.Context) (string, error) {
	mount, path, version := c.splitProbe(ctx)
	fields, err := c.api.ReadKV(ctx, mount, path, version)
	if err != nil {
		if vaultapi.CodeOf(err) == http.StatusForbidden {
			err = fault.Permanentf("%w (the token's policy needs read on %s)", err, c.conf.ProbeSecret)
		}
		return "", c.wrap("read the probe secret "+c.conf.ProbeSecret, err)
	}
	n := len(fields)
	vaultapi.ClearFields(fields)
	return fmt.Sprintf("%s (KV v%d) readable: %d fields", c.conf.ProbeSecret, version, n), nil
}

// splitProbe finds the probe secret's mount (the longest mount path that
// prefixes it; mounts may nest, "team/kv") and its KV version. A token
// that may not list the mounts gets the first segment as the mount, KV v2.
func (c *Connector) splitProbe(ctx context.Context) (mount, path string, version int) {
	p := c.conf.ProbeSecret
	mount, path, _ = strings.Cut(p, "/")
	version = 2
	ms, err := c.kvMounts(ctx)
	if err != nil {
		return mount, path, version
	}
	best := ""
	for _, m := range ms {
		if strings.HasPrefix(p, m.Path+"/") && len(m.Path) > len(best) {
			best, version = m.Path, m.Version
		}
	}
	if best == "" {
		return mount, path, 2
	}
	return best, strings.TrimPrefix(p, best+"/"), version
}
