package ecr_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"inthub.dev/pkg/connectors/oci"
	"inthub.dev/pkg/connectors/oci/ocitest"
)

// clock is the test's time for token expiry, shared by the connector
// (connectors.Config.Now) and the fakes. SigV4 dates use real time, as
// the SDK signs with it.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now()} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// awsKey is an access key the fake AWS knows.
type awsKey struct {
	secret       string
	sessionToken string // required when set (assumed-role keys)
	ecr          bool   // may call ecr:GetAuthorizationToken
	// assume lists the roles this key may assume (trust policy).
	assume map[string]bool
}

// fakeAWS is ECR's API (JSON 1.1, X-Amz-Target
// AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken) and STS
// (query protocol, AssumeRole) on two servers, both checking SigV4 against
// the keys they know: the signature, the credential scope (region and
// service), the date (within 5 minutes) and the session token. Registry
// tokens it mints are the only passwords its registry (ocitest, Basic
// mode as ECR) accepts, until they expire on the test clock.
type fakeAWS struct {
	ecrSrv, stsSrv *httptest.Server
	reg            *ocitest.Registry
	region         string
	clock          *clock
	lifetime       time.Duration

	mu     sync.Mutex
	keys   map[string]awsKey
	roles  map[string]string    // role ARN → external id required ("" none)
	tokens map[string]time.Time // registry password → expiry

	// Failure knobs for the ECR API and STS.
	ecrThrottle, ecrFail, ecrSlow atomic.Bool
	stsThrottle                   atomic.Bool
	ecrCalls, stsCalls            atomic.Int32
	lastSession                   atomic.Value // string: RoleSessionName of the last AssumeRole
}

const (
	account   = "123456789012"
	staticKey = "AKIAFAKESTATICKEY001"
	staticSec = "static-secret-key-value-0123456789abcdef"
	roleARN   = "arn:aws:iam::123456789012:role/ecr-read"
	extID     = "tenant-external-id"
	repo      = "team/app"
)

func newFakeAWS(t testing.TB) *fakeAWS {
	f := &fakeAWS{region: "eu-west-1", clock: newClock(), lifetime: 12 * time.Hour,
		keys:   map[string]awsKey{staticKey: {secret: staticSec, ecr: true, assume: map[string]bool{roleARN: true}}},
		roles:  map[string]string{roleARN: extID},
		tokens: map[string]time.Time{}}
	f.ecrSrv = httptest.NewServer(http.HandlerFunc(f.serveECR))
	t.Cleanup(f.ecrSrv.Close)
	f.stsSrv = httptest.NewServer(http.HandlerFunc(f.serveSTS))
	t.Cleanup(f.stsSrv.Close)
	f.reg = ocitest.New(t)
	f.reg.Mode = ocitest.BasicAuth
	f.reg.Accept = f.acceptToken
	f.reg.Add(repo, "v1", oci.MediaTypeOCIManifest, []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}`))
	f.reg.Add(repo, "v2", oci.MediaTypeDockerManifest, []byte(`{"schemaVersion":2,"n":2}`))
	f.reg.Add("team/other", "latest", oci.MediaTypeOCIManifest, []byte(`{"schemaVersion":2,"n":3}`))
	return f
}

// acceptToken is the registry's check: a password this fake minted and
// that has not expired.
func (f *fakeAWS) acceptToken(user, pass string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	exp, ok := f.tokens[pass]
	return user == "AWS" && ok && f.clock.now().Before(exp)
}

func (f *fakeAWS) addKey(id string, k awsKey) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.keys[id] = k
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// verify checks the request's SigV4 signature for service and returns the
// key id, or an AWS error code and message.
func (f *fakeAWS) verify(r *http.Request, body []byte, service string) (string, awsKey, string, string) {
	authz := r.Header.Get("Authorization")
	rest, ok := strings.CutPrefix(authz, "AWS4-HMAC-SHA256 ")
	if !ok {
		return "", awsKey{}, "MissingAuthenticationTokenException", "Missing Authentication Token"
	}
	var cred, signed, sig string
	for _, part := range strings.Split(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "Credential":
			cred = v
		case "SignedHeaders":
			signed = v
		case "Signature":
			sig = v
		}
	}
	scope := strings.Split(cred, "/")
	if len(scope) != 5 || scope[4] != "aws4_request" {
		return "", awsKey{}, "IncompleteSignatureException", "Credential is malformed"
	}
	keyID, region, svc := scope[0], scope[2], scope[3]
	f.mu.Lock()
	key, known := f.keys[keyID]
	f.mu.Unlock()
	if !known {
		return "", awsKey{}, "UnrecognizedClientException", "The security token included in the request is invalid."
	}
	if region != f.region || svc != service {
		return "", awsKey{}, "InvalidSignatureException", fmt.Sprintf("Credential should be scoped to a valid region and service %s.", service)
	}
	when, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
	if err != nil || time.Until(when).Abs() > 5*time.Minute {
		return "", awsKey{}, "InvalidSignatureException", "Signature expired"
	}
	if key.sessionToken != "" && r.Header.Get("X-Amz-Security-Token") != key.sessionToken {
		return "", awsKey{}, "UnrecognizedClientException", "The security token included in the request is invalid."
	}
	// Sign the same request again with the key we know; the signature
	// must be the one sent.
	again, _ := http.NewRequest(r.Method, "http://"+r.Host+r.URL.RequestURI(), bytes.NewReader(body))
	again.ContentLength = int64(len(body))
	for _, h := range strings.Split(signed, ";") {
		switch h {
		case "host", "content-length", "x-amz-date", "x-amz-security-token":
			continue
		}
		again.Header[http.CanonicalHeaderKey(h)] = r.Header.Values(h)
	}
	sum := sha256.Sum256(body)
	creds := aws.Credentials{AccessKeyID: keyID, SecretAccessKey: key.secret, SessionToken: key.sessionToken}
	if err := v4.NewSigner().SignHTTP(r.Context(), creds, again, hex.EncodeToString(sum[:]), service, region, when); err != nil {
		return "", awsKey{}, "InternalFailure", err.Error()
	}
	if !strings.HasSuffix(again.Header.Get("Authorization"), "Signature="+sig) || !strings.Contains(again.Header.Get("Authorization"), "SignedHeaders="+signed+",") {
		return "", awsKey{}, "InvalidSignatureException", "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method."
	}
	return keyID, key, "", ""
}

func ecrError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-Requestid", randHex(8))
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"__type": code, "message": msg})
}

func (f *fakeAWS) serveECR(w http.ResponseWriter, r *http.Request) {
	f.ecrCalls.Add(1)
	// Read first: the server notices a client that gave up only once the
	// body is consumed.
	body, _ := io.ReadAll(r.Body)
	if f.ecrSlow.Load() {
		<-r.Context().Done()
		return
	}
	if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/x-amz-json-1.1" {
		ecrError(w, http.StatusBadRequest, "SerializationException", "expected a JSON 1.1 POST")
		return
	}
	if f.ecrThrottle.Load() {
		ecrError(w, http.StatusBadRequest, "ThrottlingException", "Rate exceeded")
		return
	}
	if f.ecrFail.Load() {
		ecrError(w, http.StatusInternalServerError, "ServerException", "We encountered an internal error. Please try again.")
		return
	}
	_, key, code, msg := f.verify(r, body, "ecr")
	if code != "" {
		status := http.StatusBadRequest
		if code == "MissingAuthenticationTokenException" {
			status = http.StatusForbidden
		}
		ecrError(w, status, code, msg)
		return
	}
	if r.Header.Get("X-Amz-Target") != "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken" {
		ecrError(w, http.StatusBadRequest, "UnknownOperationException", "")
		return
	}
	if !key.ecr {
		ecrError(w, http.StatusBadRequest, "AccessDeniedException", "User is not authorized to perform: ecr:GetAuthorizationToken on resource: *")
		return
	}
	pass := base64.StdEncoding.EncodeToString([]byte(randHex(24)))
	exp := f.clock.now().Add(f.lifetime)
	f.mu.Lock()
	f.tokens[pass] = exp
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	_ = json.NewEncoder(w).Encode(map[string]any{"authorizationData": []map[string]any{{
		"authorizationToken": base64.StdEncoding.EncodeToString([]byte("AWS:" + pass)),
		"expiresAt":          float64(exp.UnixMilli()) / 1000,
		"proxyEndpoint":      f.reg.URL,
	}}})
}

type stsError struct {
	XMLName xml.Name `xml:"ErrorResponse"`
	Error   struct {
		Type    string `xml:"Type"`
		Code    string `xml:"Code"`
		Message string `xml:"Message"`
	} `xml:"Error"`
	RequestID string `xml:"RequestId"`
}

func writeSTSError(w http.ResponseWriter, status int, code, msg string) {
	var e stsError
	e.Error.Type, e.Error.Code, e.Error.Message, e.RequestID = "Sender", code, msg, randHex(8)
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(status)
	_ = xml.NewEncoder(w).Encode(e)
}

func (f *fakeAWS) serveSTS(w http.ResponseWriter, r *http.Request) {
	f.stsCalls.Add(1)
	body, _ := io.ReadAll(r.Body)
	if f.stsThrottle.Load() {
		writeSTSError(w, http.StatusBadRequest, "Throttling", "Rate exceeded")
		return
	}
	keyID, key, code, msg := f.verify(r, body, "sts")
	if code != "" {
		if code == "UnrecognizedClientException" {
			code = "InvalidClientTokenId"
		}
		if code == "InvalidSignatureException" {
			code = "SignatureDoesNotMatch"
		}
		writeSTSError(w, http.StatusForbidden, code, msg)
		return
	}
	form, err := url.ParseQuery(string(body))
	if err != nil || form.Get("Action") != "AssumeRole" || form.Get("Version") != "2011-06-15" {
		writeSTSError(w, http.StatusBadRequest, "InvalidAction", "Could not find operation")
		return
	}
	arn := form.Get("RoleArn")
	f.mu.Lock()
	want, exists := f.roles[arn]
	f.mu.Unlock()
	if !exists || !key.assume[arn] || form.Get("ExternalId") != want {
		writeSTSError(w, http.StatusForbidden, "AccessDenied",
			fmt.Sprintf("User: arn:aws:iam::%s:user/%s is not authorized to perform: sts:AssumeRole on resource: %s", account, keyID[:8], arn))
		return
	}
	f.lastSession.Store(form.Get("RoleSessionName"))
	id, secret, session := "ASIA"+strings.ToUpper(randHex(8)), randHex(20), randHex(32)
	f.addKey(id, awsKey{secret: secret, sessionToken: session, ecr: true})
	w.Header().Set("Content-Type", "text/xml")
	fmt.Fprintf(w, `<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleResult>
    <AssumedRoleUser><Arn>%s/%s</Arn><AssumedRoleId>AROAFAKE:%s</AssumedRoleId></AssumedRoleUser>
    <Credentials>
      <AccessKeyId>%s</AccessKeyId><SecretAccessKey>%s</SecretAccessKey><SessionToken>%s</SessionToken>
      <Expiration>%s</Expiration>
    </Credentials>
  </AssumeRoleResult>
  <ResponseMetadata><RequestId>%s</RequestId></ResponseMetadata>
</AssumeRoleResponse>`, arn, form.Get("RoleSessionName"), form.Get("RoleSessionName"), id, secret, session,
		time.Now().Add(time.Hour).UTC().Format(time.RFC3339), randHex(8))
}

// config is a static-key config against the fakes; extra overrides.
func (f *fakeAWS) config(extra map[string]any) map[string]any {
	conf := map[string]any{
		"region": f.region, "registryId": account, "endpoint": f.reg.URL, "insecure": true,
		"authMode": "static", "accessKeyId": staticKey, "secretAccessKey": "authref://vault/aws#secret",
		"apiEndpoint": f.ecrSrv.URL, "probeRepository": repo, "timeoutSeconds": 5,
	}
	return ocitest.Merge(conf, extra)
}
