package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"inthub.dev/pkg/authref"
	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/connect"
	"inthub.dev/pkg/doctor"
	"inthub.dev/pkg/egress"
	"inthub.dev/services/catalog/store"
)

// DoctorConfig configures the catalog's doctor.
type DoctorConfig struct {
	// Connectors builds the integration's connector (required).
	Connectors *connect.Builder
	// Store keeps the runs (required).
	Store *store.Store
	// Egress guards the doctor's own TCP and TLS dials, as the
	// connectors' calls are guarded.
	Egress egress.Policy
	// PacksDir is a directory of the operator's declarative check packs
	// (doctor.LoadPacks); empty: none. A pack that runs a command off the
	// allow-list makes NewDoctor fail.
	PacksDir string
	// SigningKey is the AuthRef of an ed25519 private key (PKCS#8 PEM):
	// each run's summary is then signed (DSSE). Empty: runs are not signed.
	SigningKey string
	// Secrets resolves SigningKey (default: an authref resolver for env
	// and file references).
	Secrets connectors.SecretResolver
	// MaxConcurrent bounds the runs in progress (4): each makes a dozen
	// provider calls and may run pack commands.
	MaxConcurrent int
	// Timeout bounds one run (2 min).
	Timeout time.Duration
	Logger  *slog.Logger
}

// DoctorService runs the doctor for the API and stores its runs.
type DoctorService struct {
	c      DoctorConfig
	doc    *doctor.Doctor
	signer *doctor.Signer
	slot   chan struct{}
}

var _ Doctor = (*DoctorService)(nil)

// NewDoctor returns the catalog's doctor: it loads the packs and the
// signing key, if configured.
func NewDoctor(ctx context.Context, c DoctorConfig) (*DoctorService, error) {
	if c.Connectors == nil || c.Store == nil {
		return nil, errors.New("catalog doctor: DoctorConfig.Connectors and .Store are required (the connector builder and the store the API uses)")
	}
	if c.MaxConcurrent <= 0 {
		c.MaxConcurrent = 4
	}
	if c.Timeout <= 0 {
		c.Timeout = 2 * time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	var packs []doctor.Pack
	if c.PacksDir != "" {
		var err error
		if packs, err = doctor.LoadPacks(c.PacksDir); err != nil {
			return nil, fmt.Errorf("catalog doctor: %w", err)
		}
		names := make([]string, 0, len(packs))
		for _, p := range packs {
			names = append(names, p.Name)
		}
		c.Logger.Info("doctor packs loaded", slog.String("dir", c.PacksDir), slog.Any("packs", names))
	}
	ds := &DoctorService{c: c, slot: make(chan struct{}, c.MaxConcurrent)}
	if c.SigningKey != "" {
		res := c.Secrets
		if res == nil {
			res = authref.NewResolver()
		}
		pemBytes, err := res.Resolve(ctx, c.SigningKey)
		if err != nil {
			return nil, fmt.Errorf("catalog doctor: signing key %s: %w", c.SigningKey, err)
		}
		key, err := doctor.ParseSigningKey(pemBytes)
		clear(pemBytes)
		if err != nil {
			return nil, fmt.Errorf("catalog doctor: signing key %s: %w", c.SigningKey, err)
		}
		if ds.signer, err = doctor.NewSigner(key); err != nil {
			return nil, fmt.Errorf("catalog doctor: %w", err)
		}
	}
	d := &net.Dialer{Timeout: 10 * time.Second, Control: c.Egress.DialControl()}
	ds.doc = doctor.New(doctor.Options{Dial: d.DialContext, Packs: packs, Command: doctorCommand, Logger: c.Logger})
	return ds, nil
}

// doctorCommand is what the evidence log and the signed summary name as
// the command that started a run.
const doctorCommand = "POST " + Prefix + "/integrations/{id}/doctor"

// Run diagnoses it and stores the run.
func (d *DoctorService) Run(ctx context.Context, it store.Integration, actor string) (DoctorReport, error) {
	if d.c.Connectors.Provider(it.Type) == "" {
		return DoctorReport{}, fmt.Errorf("integration type %s: %w", it.Type, connect.ErrNoConnector)
	}
	select {
	case d.slot <- struct{}{}:
		defer func() { <-d.slot }()
	default:
		return DoctorReport{}, ErrDoctorBusy
	}
	ctx, cancel := context.WithTimeout(ctx, d.c.Timeout)
	defer cancel()
	view := connectorView(it)
	endpoint, err := d.endpoint(ctx, it)
	if err != nil {
		return DoctorReport{}, err
	}
	rep, ev := d.doc.Run(ctx, doctor.Target{
		IntegrationID: it.ID, TenantID: it.TenantID, Type: it.Type, Endpoint: endpoint,
		Connect: func(ctx context.Context) (connectors.Connector, error) { return d.c.Connectors.Connector(ctx, view) },
	})
	raw, err := json.Marshal(rep)
	if err != nil {
		return DoctorReport{}, err
	}
	evidence := ev.Bytes()
	var sig *DSSEEnvelope
	if d.signer != nil {
		env, err := d.signer.Sign(rep, evidence, doctorCommand)
		if err != nil {
			d.c.Logger.WarnContext(ctx, "doctor: cannot sign the run's summary", slog.String("error", err.Error()),
				slog.String("tenantId", it.TenantID), slog.String("integrationId", it.ID))
		} else {
			sig = envelopeView(env)
		}
	}
	// The run happened: its record must not be lost to a client that hung up.
	if _, err := d.c.Store.RecordDoctorRun(context.WithoutCancel(ctx), it.TenantID, store.DoctorRun{
		ID: rep.RunID, IntegrationID: it.ID, OverallStatus: string(rep.OverallStatus), Report: raw,
		Evidence: string(evidence), DurationMs: rep.DurationMs, RunAt: rep.StartedAt, RunBy: actor,
	}); err != nil {
		return DoctorReport{}, err
	}
	d.c.Logger.InfoContext(ctx, "doctor run", slog.String("tenantId", it.TenantID), slog.String("integrationId", it.ID),
		slog.String("overallStatus", string(rep.OverallStatus)), slog.Int64("durationMs", rep.DurationMs))
	out := reportView(rep, actor)
	out.Evidence = string(evidence)
	out.Signature = sig
	return out, nil
}

// endpoint is the URL the integration's connector calls: the config's
// endpoint, else its type's schema default (gitlab.com, github.com).
func (d *DoctorService) endpoint(ctx context.Context, it store.Integration) (string, error) {
	var conf struct {
		Endpoint string `json:"endpoint"`
	}
	_ = json.Unmarshal(it.Config, &conf)
	if conf.Endpoint != "" {
		return conf.Endpoint, nil
	}
	t, err := d.c.Store.GetType(ctx, it.Type)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return "", nil
		}
		return "", err
	}
	var schema struct {
		Properties struct {
			Endpoint struct {
				Default string `json:"default"`
			} `json:"endpoint"`
		} `json:"properties"`
	}
	_ = json.Unmarshal(t.ConfigSchema, &schema)
	return schema.Properties.Endpoint.Default, nil
}

// Reports lists the integration's latest runs.
func (d *DoctorService) Reports(ctx context.Context, tenantID, integrationID string, limit int, withEvidence bool) ([]DoctorReport, error) {
	runs, err := d.c.Store.DoctorRuns(ctx, tenantID, integrationID, limit, withEvidence)
	if err != nil {
		return nil, err
	}
	out := make([]DoctorReport, 0, len(runs))
	for _, r := range runs {
		var rep doctor.Report
		if err := json.Unmarshal(r.Report, &rep); err != nil {
			return nil, fmt.Errorf("doctor run %s: stored report: %w", r.ID, err)
		}
		v := reportView(rep, r.RunBy)
		v.Evidence = r.Evidence
		out = append(out, v)
	}
	return out, nil
}

func reportView(rep doctor.Report, runBy string) DoctorReport {
	out := DoctorReport{
		RunID: rep.RunID, IntegrationID: rep.IntegrationID, Type: rep.Type, OverallStatus: string(rep.OverallStatus),
		Checks: make([]DoctorCheck, 0, len(rep.Checks)), StartedAt: rep.StartedAt.UTC(), DurationMs: max(rep.DurationMs, 0),
		RunBy: runBy,
	}
	for _, c := range rep.Checks {
		v := DoctorCheck{Name: c.Name, Status: string(c.Status), Message: c.Message, Details: c.Details,
			Suggestions: c.Suggestions, DurationMs: max(c.DurationMs, 0)}
		if c.HowToFix != nil {
			cmds := c.HowToFix.Commands
			if cmds == nil {
				cmds = []string{}
			}
			v.HowToFix = &DoctorHowToFix{Summary: c.HowToFix.Summary, Commands: cmds}
		}
		out.Checks = append(out.Checks, v)
	}
	return out
}

func envelopeView(e *doctor.Envelope) *DSSEEnvelope {
	out := &DSSEEnvelope{PayloadType: e.PayloadType, Payload: e.Payload, Signatures: make([]DSSESignature, 0, len(e.Signatures))}
	for _, s := range e.Signatures {
		out.Signatures = append(out.Signatures, DSSESignature{KeyID: s.KeyID, Sig: s.Sig})
	}
	return out
}
