package cloudwatch

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	cw "github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/fault"
)

// SecretResolver resolves the config's AuthRefs (authref.Resolver,
// connectors.SecretResolver).
type SecretResolver interface {
	Resolve(ctx context.Context, ref string) ([]byte, error)
}

// credentialTTL is how long resolved keys are used before they are read
// again, so a rotated secret takes effect within it.
const credentialTTL = 5 * time.Minute

// NewClient builds a CloudWatch client for c: its region and endpoint,
// the keys resolved through secrets when a call needs them (and again
// after credentialTTL), every request sent through hc (the caller's
// egress-guarded client; nil is http.DefaultClient, for tests).
// maxAttempts counts the SDK's own tries: 1 for a connector, which never
// retries; a poller may allow one more.
func NewClient(c Config, secrets SecretResolver, hc *http.Client, maxAttempts int) *cw.Client {
	if hc == nil {
		hc = http.DefaultClient
	}
	opts := cw.Options{
		Region:      c.Region,
		HTTPClient:  hc,
		Credentials: aws.NewCredentialsCache(credentials(c, secrets)),
	}
	if maxAttempts <= 1 {
		opts.Retryer = aws.NopRetryer{}
	} else {
		opts.RetryMaxAttempts = maxAttempts
	}
	if c.Endpoint != "" {
		opts.BaseEndpoint = aws.String(c.Endpoint)
	}
	return cw.New(opts)
}

func credentials(c Config, secrets SecretResolver) aws.CredentialsProviderFunc {
	return func(ctx context.Context) (aws.Credentials, error) {
		if secrets == nil {
			return aws.Credentials{}, fault.Permanent(errors.New("cannot resolve the AWS keys: no secret resolver configured"))
		}
		id, err := resolve(ctx, secrets, "accessKeyId", c.AccessKeyID)
		if err != nil {
			return aws.Credentials{}, err
		}
		key, err := resolve(ctx, secrets, "secretAccessKey", c.SecretAccessKey)
		if err != nil {
			return aws.Credentials{}, err
		}
		return aws.Credentials{AccessKeyID: strings.TrimSpace(string(id)), SecretAccessKey: strings.TrimSpace(string(key)),
			Source: "inthub authref", CanExpire: true, Expires: time.Now().Add(credentialTTL)}, nil
	}
}

func resolve(ctx context.Context, secrets SecretResolver, field, ref string) ([]byte, error) {
	b, err := secrets.Resolve(ctx, ref)
	if err != nil {
		if fault.ClassOf(err) == fault.ClassUnknown {
			err = fault.Permanent(err)
		}
		return nil, &credentialError{field: field, err: err}
	}
	return b, nil
}

// credentialError keeps the class of a failed AuthRef resolution through
// the SDK's wrapping.
type credentialError struct {
	field string
	err   error
}

func (e *credentialError) Error() string {
	return "cannot resolve the " + e.field + " AuthRef: " + e.err.Error()
}
func (e *credentialError) Unwrap() error { return e.err }

// Error codes CloudWatch (and AWS's front door) answer, by what they mean
// for the caller.
var (
	authCodes = map[string]string{
		"InvalidClientTokenId":        "the access key id is not known to AWS",
		"UnrecognizedClientException": "the access key id is not known to AWS",
		"SignatureDoesNotMatch":       "the secret access key does not match the access key id (or the region is wrong)",
		"IncompleteSignature":         "the request signature was refused",
		"MissingAuthenticationToken":  "no credentials were sent",
		"ExpiredToken":                "the credentials have expired",
		"ExpiredTokenException":       "the credentials have expired",
		"AccessDenied":                "the credentials lack the permission for this operation",
		"AccessDeniedException":       "the credentials lack the permission for this operation",
		"OptInRequired":               "the account is not subscribed to CloudWatch in this region",
	}
	throttleCodes = []string{"Throttling", "ThrottlingException", "ThrottledException", "RequestLimitExceeded",
		"TooManyRequestsException", "RequestThrottled", "RequestThrottledException", "SlowDown"}
	serverCodes = []string{"InternalFailure", "InternalServiceError", "InternalServiceFault", "ServiceUnavailable",
		"ServiceUnavailableException", "RequestTimeout", "RequestTimeoutException"}
)

// throttleWait is the retry hint of a throttled call: CloudWatch sends no
// Retry-After, and its limits are per second.
const throttleWait = time.Second

// Classify turns an SDK error of operation op into a classified
// *connectors.RequestError (permanent, transient or offline, see
// connectors.ClassifyNet): refused keys and missing permissions are
// permanent, throttling is transient with a retry hint, 5xx transient,
// other 4xx (validation, a bad token) permanent. The text names the
// operation, the host, the status and CloudWatch's error code, never a
// secret.
func Classify(op string, err error) error {
	if err == nil {
		return nil
	}
	var ce *credentialError
	if errors.As(err, &ce) {
		return classed(fault.ClassOf(ce.err), fmt.Errorf("%s: %w", op, ce))
	}
	host, status := "", 0
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) && re.Response != nil && re.Response.Response != nil {
		status = re.Response.StatusCode
		if r := re.Response.Request; r != nil && r.URL != nil {
			host = r.URL.Host
		}
	}
	var api smithy.APIError
	if errors.As(err, &api) {
		return classifyStatus(op, host, status, api.ErrorCode(), err, api.ErrorMessage())
	}
	if status > 0 {
		// An answer, but not in CloudWatch's protocol (a proxy, a wrong
		// endpoint).
		return classifyStatus(op, host, status, "", err)
	}
	// Nothing answered.
	cerr := connectors.ClassifyNet(err)
	var rq *connectors.RequestError
	if errors.As(cerr, &rq) {
		rq.Reason = op + ": " + rq.Reason
		if rq.Host == "" {
			rq.Host = hostOf(err)
		}
	}
	return cerr
}

func classifyStatus(op, host string, status int, code string, err error, apiMsg ...string) error {
	r := &connectors.RequestError{Host: host, StatusCode: status, Err: err}
	head := op + ": "
	if status > 0 {
		head += fmt.Sprintf("%d %s", status, http.StatusText(status))
	}
	if code != "" {
		head += " " + code
	}
	detail := ""
	if len(apiMsg) > 0 && apiMsg[0] != "" {
		detail = " (" + truncate(apiMsg[0], 300) + ")"
	}
	switch {
	case authCodes[code] != "":
		r.Reason = head + ": " + authCodes[code] + detail
		return fault.Permanent(r)
	case contains(throttleCodes, code) || status == http.StatusTooManyRequests:
		r.Reason = head + ": throttled by CloudWatch; retry after " + throttleWait.String()
		return fault.RetryAfter(r, throttleWait)
	case contains(serverCodes, code) || status >= 500 && status != http.StatusNotImplemented:
		r.Reason = head + ": CloudWatch failed" + detail
		return fault.Transient(r)
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		r.Reason = head + ": the credentials were refused" + detail
		return fault.Permanent(r)
	case status == http.StatusRequestTimeout:
		r.Reason = head + ": timed out waiting for the request"
		return fault.Transient(r)
	case status >= 400 || code != "":
		r.Reason = head + ": the request was refused" + detail
		return fault.Permanent(r)
	}
	r.Reason = head + ": unexpected answer"
	return fault.Transient(r)
}

func classed(c fault.Class, err error) error {
	switch c {
	case fault.ClassTransient:
		return fault.Transient(err)
	case fault.ClassOffline:
		return fault.Offline(err)
	}
	return fault.Permanent(err)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func hostOf(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		if u, perr := url.Parse(ue.URL); perr == nil {
			return u.Host
		}
	}
	return ""
}
