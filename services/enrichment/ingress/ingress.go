// Package ingress is the webhook endpoint of the enrichment service: it
// checks that a delivery comes from the provider (GitHub's HMAC signature,
// GitLab's secret token), that it names a live integration of the right
// type, and publishes the provider's document untouched as
// ingest.<provider>.<kind>. It answers 2xx only once the event is durable
// (acknowledged by JetStream or in the publisher's spool), so a provider
// that got its 2xx never needs to redeliver.
//
// Nothing is published for a delivery that fails a check: bad signature
// 401, unknown integration 404, body too large 413, malformed 400.
package ingress

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"inthub.dev/events"
	"inthub.dev/pkg/fault"
)

// Source is the CloudEvents source of ingest events from webhooks.
const Source = "inthub/ingress"

// DefaultMaxBody bounds a webhook body. GitHub caps payloads at 25 MB, but
// an event must fit one NATS message (1 MiB by default): larger pushes are
// refused with 413 rather than accepted and lost.
const DefaultMaxBody = 768 << 10

// idNamespace makes ingest event ids: UUIDv5(idNamespace, provider,
// integration id, delivery id). Changing it changes every id, so a
// redelivery across the change would not be deduplicated: never change it.
var idNamespace = uuid.MustParse("6c1f4b0e-8f0e-4c55-9a53-2f0e3d8b7a61")

// EventID is the id of the ingest event of one delivery: the same for every
// redelivery of it to the same integration (so JetStream's duplicate window
// drops the copies), different across integrations and providers (so one
// tenant's delivery never suppresses another's).
func EventID(provider, integrationID, deliveryID string) string {
	return uuid.NewSHA1(idNamespace, []byte(provider+"\n"+integrationID+"\n"+deliveryID)).String()
}

// Integrations finds an integration by id alone (the URL has no tenant);
// integrationset.Set implements it. If it also has Ready() <-chan struct{}
// (the Set does), deliveries are answered 503 until that is closed, so a
// restart does not turn a provider's deliveries into 404s.
type Integrations interface {
	Lookup(id string) (events.Integration, bool)
}

type readier interface{ Ready() <-chan struct{} }

// Secrets resolves AuthRef URIs; authref.Resolver implements it.
type Secrets interface {
	Resolve(ctx context.Context, ref string) ([]byte, error)
}

// Publisher publishes an event durably; bus.Publisher implements it.
type Publisher interface {
	Publish(ctx context.Context, ev events.Event) error
}

// Config configures a Handler.
type Config struct {
	Integrations Integrations
	Secrets      Secrets
	Publisher    Publisher
	// MaxBody bounds a request body in bytes (DefaultMaxBody).
	MaxBody int64
	// PublishTimeout bounds the wait for the event to be durable (10s:
	// GitHub gives up on a delivery after 10 s).
	PublishTimeout time.Duration
	// SNS configures POST /webhooks/sns/{integrationId}.
	SNS    SNSConfig
	Now    func() time.Time
	Logger *slog.Logger
}

// Handler serves POST /webhooks/github/{integrationId}, POST
// /webhooks/gitlab/{integrationId} and, for CloudWatch alarms through an
// SNS HTTPS subscription, POST /webhooks/sns/{integrationId}.
type Handler struct {
	cfg  Config
	log  *slog.Logger
	mux  *http.ServeMux
	reqs *prometheus.CounterVec
	sigs *prometheus.CounterVec
	sns  *snsVerifier
}

// New checks cfg and builds the handler.
func New(cfg Config) (*Handler, error) {
	switch {
	case cfg.Integrations == nil:
		return nil, errors.New("ingress: Config.Integrations is required (an integrationset.Set)")
	case cfg.Secrets == nil:
		return nil, errors.New("ingress: Config.Secrets is required (an authref.Resolver) to read webhook secrets")
	case cfg.Publisher == nil:
		return nil, errors.New("ingress: Config.Publisher is required (a bus.Publisher with a spool)")
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	if cfg.PublishTimeout <= 0 {
		cfg.PublishTimeout = 10 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.SNS = cfg.SNS.withDefaults()
	h := &Handler{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux(),
		sns: &snsVerifier{cfg: cfg.SNS, now: cfg.Now, certs: map[string]cachedCert{}}}
	h.reqs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "enrichment_webhook_requests_total",
		Help: "Webhook deliveries by provider and outcome (accepted, ping, ignored, subscription_confirmed, bad_signature, unknown_integration, too_large, bad_request, secret_unavailable, publish_failed, unavailable).",
	}, []string{"provider", "outcome"})
	h.sigs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "enrichment_webhook_signature_failures_total",
		Help: "Webhook deliveries refused with 401 because the signature or token did not verify (or none could be checked), by provider.",
	}, []string{"provider"})
	h.mux.HandleFunc("POST /webhooks/github/{integrationId}", func(w http.ResponseWriter, r *http.Request) {
		h.serve(w, r, github{})
	})
	h.mux.HandleFunc("POST /webhooks/gitlab/{integrationId}", func(w http.ResponseWriter, r *http.Request) {
		h.serve(w, r, gitlab{})
	})
	h.mux.HandleFunc("POST /webhooks/sns/{integrationId}", h.serveSNS)
	return h, nil
}

// Collectors are the handler's metrics, for the service's registry.
func (h *Handler) Collectors() []prometheus.Collector {
	return []prometheus.Collector{h.reqs, h.sigs}
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// provider is what differs between GitHub and GitLab.
type provider interface {
	name() string
	integrationType() string
	// verify checks the delivery against the secret; false refuses it.
	verify(secret []byte, header http.Header, body []byte) bool
	// parse reads the delivery: its kind ("" for an event that is not
	// ingested), whether it is a ping, its delivery id and the document.
	parse(header http.Header, body []byte) (delivery, error)
}

type delivery struct {
	kind    string // "" = not ingested
	ping    bool
	id      string
	payload json.RawMessage
	headers map[string]string
}

// errBadRequest marks a delivery that cannot be read: 400.
var errBadRequest = errors.New("bad request")

func badRequest(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errBadRequest, fmt.Sprintf(format, args...))
}

func (h *Handler) serve(w http.ResponseWriter, r *http.Request, p provider) {
	id := r.PathValue("integrationId")
	log := h.log.With("provider", p.name(), "integrationId", id)
	outcome := func(o string) { h.reqs.WithLabelValues(p.name(), o).Inc() }

	if !h.ready() {
		outcome("unavailable")
		w.Header().Set("Retry-After", "5")
		reply(w, http.StatusServiceUnavailable, "starting, retry later")
		return
	}
	// Unknown ids answer before the body is read, so a flood at random
	// ids costs no reading or hashing.
	in, ok := h.cfg.Integrations.Lookup(id)
	if !ok || in.Type != p.integrationType() {
		outcome("unknown_integration")
		reply(w, http.StatusNotFound, "unknown integration")
		return
	}
	log = log.With("tenantId", in.TenantID)
	if r.ContentLength > h.cfg.MaxBody {
		outcome("too_large")
		reply(w, http.StatusRequestEntityTooLarge, "body larger than "+strconv.FormatInt(h.cfg.MaxBody, 10)+" bytes")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxBody))
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			outcome("too_large")
			reply(w, http.StatusRequestEntityTooLarge, "body larger than "+strconv.FormatInt(h.cfg.MaxBody, 10)+" bytes")
			return
		}
		outcome("bad_request")
		reply(w, http.StatusBadRequest, "cannot read the body")
		return
	}

	secret, err := h.secret(r.Context(), in)
	if err != nil {
		if errors.Is(err, errNoSecret) {
			h.sigs.WithLabelValues(p.name()).Inc()
			outcome("bad_signature")
			log.Warn("webhook refused: the integration has no webhookSecret to verify deliveries with")
			reply(w, http.StatusUnauthorized, "signature not verified")
			return
		}
		outcome("secret_unavailable")
		log.Error("webhook secret unavailable", "error", err)
		code := http.StatusServiceUnavailable
		if fault.ClassOf(err) == fault.ClassPermanent {
			code = http.StatusInternalServerError
		}
		reply(w, code, "cannot verify deliveries now")
		return
	}
	if !p.verify(secret, r.Header, body) {
		h.sigs.WithLabelValues(p.name()).Inc()
		outcome("bad_signature")
		log.Warn("webhook refused: signature or token did not verify", "remote", r.RemoteAddr)
		reply(w, http.StatusUnauthorized, "signature not verified")
		return
	}

	d, err := p.parse(r.Header, body)
	if err != nil {
		outcome("bad_request")
		log.Info("webhook refused", "error", err)
		reply(w, http.StatusBadRequest, err.Error())
		return
	}
	switch {
	case d.ping:
		outcome("ping")
		reply(w, http.StatusOK, "pong")
		return
	case d.kind == "":
		outcome("ignored")
		reply(w, http.StatusAccepted, "event not ingested")
		return
	}

	sum := sha256.Sum256(body)
	now := h.cfg.Now().UTC().Truncate(time.Millisecond)
	evID := EventID(p.name(), in.ID, d.id)
	ev, err := events.New(events.IngestSubject(p.name(), d.kind), Source, in.TenantID, events.Ingested{
		IntegrationID: in.ID, TenantID: in.TenantID, Provider: p.name(), Kind: d.kind,
		DeliveryID: d.id, Via: events.ViaWebhook, ReceivedAt: now, Headers: d.headers,
		BodySHA256: hex.EncodeToString(sum[:]), Payload: d.payload,
	})
	if err != nil {
		outcome("bad_request")
		log.Info("webhook refused: not a valid ingest event", "error", err)
		reply(w, http.StatusBadRequest, "delivery does not form a valid event")
		return
	}
	ev.ID, ev.Time = evID, now
	// The provider has been told nothing yet: finish the publish even if
	// it hangs up, so what it retries is a duplicate, never a loss.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), h.cfg.PublishTimeout)
	defer cancel()
	if err := h.cfg.Publisher.Publish(ctx, ev); err != nil {
		outcome("publish_failed")
		log.Error("webhook not stored", "deliveryId", d.id, "error", err)
		reply(w, http.StatusServiceUnavailable, "cannot store the delivery now, retry later")
		return
	}
	outcome("accepted")
	log.Debug("webhook accepted", "kind", d.kind, "deliveryId", d.id, "eventId", evID)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_ = json.NewEncoder(w).Encode(map[string]string{"status": "accepted", "id": evID})
}

// ready reports whether the integrations are loaded.
func (h *Handler) ready() bool {
	r, ok := h.cfg.Integrations.(readier)
	if !ok {
		return true
	}
	select {
	case <-r.Ready():
		return true
	default:
		return false
	}
}

var errNoSecret = errors.New("no webhook secret configured")

// secret resolves the integration's webhookSecret AuthRef. An integration
// without one cannot have its deliveries verified, so they are refused.
func (h *Handler) secret(ctx context.Context, in events.Integration) ([]byte, error) {
	var c struct {
		WebhookSecret string `json:"webhookSecret"`
	}
	if err := json.Unmarshal(in.Config, &c); err != nil || c.WebhookSecret == "" {
		return nil, errNoSecret
	}
	s, err := h.cfg.Secrets.Resolve(ctx, c.WebhookSecret)
	if err != nil {
		return nil, fmt.Errorf("resolve webhookSecret: %w", err)
	}
	if len(s) == 0 {
		return nil, errNoSecret
	}
	return s, nil
}

// reply writes a short JSON status. Messages never echo request values.
func reply(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"status": http.StatusText(code), "message": msg})
}
