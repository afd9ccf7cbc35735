package doctor

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/secure-systems-lab/go-securesystemslib/dsse"
)

// PayloadType is the DSSE payload type of a signed run summary.
const PayloadType = "application/vnd.inthub.doctor-summary+json"

// Envelope is a DSSE envelope.
type Envelope = dsse.Envelope

// Summary is what a run's DSSE envelope signs: the verdict of each check
// and the digest of the evidence log, enough for an auditor to hold the
// stored report and log to what the doctor said at the time.
type Summary struct {
	RunID          string         `json:"runId"`
	IntegrationID  string         `json:"integrationId"`
	Type           string         `json:"type"`
	OverallStatus  Overall        `json:"overallStatus"`
	StartedAt      time.Time      `json:"startedAt"`
	DurationMs     int64          `json:"durationMs"`
	Checks         []SummaryCheck `json:"checks"`
	EvidenceSHA256 string         `json:"evidenceSha256"`
	DoctorCommand  string         `json:"doctor_command"`
}

// SummaryCheck is one check's verdict in a Summary.
type SummaryCheck struct {
	Name   string `json:"name"`
	Status Status `json:"status"`
}

// Signer signs run summaries with an ed25519 key.
type Signer struct {
	es  *dsse.EnvelopeSigner
	pub ed25519.PublicKey
}

// NewSigner returns a Signer of key.
func NewSigner(key ed25519.PrivateKey) (*Signer, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, errors.New("doctor: the signing key is not an ed25519 private key")
	}
	sv := &edSigner{key: key}
	es, err := dsse.NewEnvelopeSigner(sv)
	if err != nil {
		return nil, err
	}
	return &Signer{es: es, pub: key.Public().(ed25519.PublicKey)}, nil
}

// ParseSigningKey reads an ed25519 private key in PKCS#8 PEM ("PRIVATE
// KEY", as openssl genpkey -algorithm ed25519 writes it).
func ParseSigningKey(b []byte) (ed25519.PrivateKey, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("doctor: the signing key is not PEM (want an ed25519 PKCS#8 private key: openssl genpkey -algorithm ed25519)")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		// The parser's message is not quoted: it must never carry key
		// material.
		return nil, errors.New("doctor: the signing key is not a PKCS#8 private key")
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, errors.New("doctor: the signing key is not ed25519")
	}
	return ek, nil
}

// Public is the key that verifies the Signer's envelopes.
func (s *Signer) Public() ed25519.PublicKey { return s.pub }

// Sign signs the summary of rep, its evidence log and the command that
// started the run.
func (s *Signer) Sign(rep Report, evidence []byte, command string) (*Envelope, error) {
	sum := sha256.Sum256(evidence)
	sm := Summary{
		RunID: rep.RunID, IntegrationID: rep.IntegrationID, Type: rep.Type, OverallStatus: rep.OverallStatus,
		StartedAt: rep.StartedAt.UTC(), DurationMs: rep.DurationMs, EvidenceSHA256: hex.EncodeToString(sum[:]),
		DoctorCommand: command, Checks: make([]SummaryCheck, 0, len(rep.Checks)),
	}
	for _, c := range rep.Checks {
		sm.Checks = append(sm.Checks, SummaryCheck{Name: c.Name, Status: c.Status})
	}
	body, err := json.Marshal(sm)
	if err != nil {
		return nil, err
	}
	return s.es.SignPayload(context.Background(), PayloadType, body)
}

// VerifySummary checks env's signature with pub and returns the summary.
func VerifySummary(env *Envelope, pub ed25519.PublicKey) (Summary, error) {
	if env.PayloadType != PayloadType {
		return Summary{}, fmt.Errorf("doctor: payload type %q, want %s", env.PayloadType, PayloadType)
	}
	ev, err := dsse.NewEnvelopeVerifier(&edSigner{pub: pub})
	if err != nil {
		return Summary{}, err
	}
	_, body, err := ev.VerifyAndDecode(context.Background(), env)
	if err != nil {
		return Summary{}, fmt.Errorf("doctor: %w", err)
	}
	var sm Summary
	if err := json.Unmarshal(body, &sm); err != nil {
		return Summary{}, fmt.Errorf("doctor: the signed summary: %w", err)
	}
	return sm, nil
}

// edSigner is dsse's SignerVerifier over an ed25519 key; its key id is
// the SHA-256 of the public key (dsse.SHA256KeyID).
type edSigner struct {
	key ed25519.PrivateKey
	pub ed25519.PublicKey
}

func (e *edSigner) public() ed25519.PublicKey {
	if e.pub != nil {
		return e.pub
	}
	return e.key.Public().(ed25519.PublicKey)
}

func (e *edSigner) Sign(_ context.Context, data []byte) ([]byte, error) {
	if e.key == nil {
		return nil, errors.New("doctor: no signing key")
	}
	return ed25519.Sign(e.key, data), nil
}

func (e *edSigner) Verify(_ context.Context, data, sig []byte) error {
	if !ed25519.Verify(e.public(), data, sig) {
		return errors.New("signature does not verify")
	}
	return nil
}

func (e *edSigner) KeyID() (string, error) { return dsse.SHA256KeyID(e.public()) }

func (e *edSigner) Public() crypto.PublicKey { return e.public() }
