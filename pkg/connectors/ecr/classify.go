package ecr

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/fault"
)

// AWS error codes by what they mean to the integration. ECR (JSON 1.1)
// and STS (query) name the same failure differently.
var (
	// The key is unknown, the signature wrong, the session token expired.
	credentialCodes = codes("UnrecognizedClientException", "InvalidClientTokenId", "InvalidSignatureException",
		"SignatureDoesNotMatch", "IncompleteSignature", "MissingAuthenticationToken", "ExpiredTokenException",
		"ExpiredToken", "InvalidAccessKeyId", "AuthFailure", "InvalidToken")
	// The identity is known but may not do this.
	permissionCodes = codes("AccessDeniedException", "AccessDenied", "UnauthorizedOperation", "RegionDisabledException")
	// Slow down: AWS sends no Retry-After, so the hint is throttleWait.
	throttleCodes = codes("ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded",
		"RequestThrottled", "RequestThrottledException", "SlowDown", "PriorRequestNotComplete")
	serverCodes = codes("ServerException", "InternalFailure", "InternalError", "ServiceUnavailable",
		"ServiceUnavailableException", "IDPCommunicationError")
)

// throttleWait is the retry hint of a throttled call: the SDK's own
// retryer starts its backoff near one second.
const throttleWait = 2 * time.Second

func codes(c ...string) map[string]bool {
	m := make(map[string]bool, len(c))
	for _, s := range c {
		m[s] = true
	}
	return m
}

// classify turns an SDK error into a classified one whose message names
// the AWS operation, the host, the status and AWS's code and message, and
// says how to fix it. A cause that is already classified (an AuthRef that
// does not resolve) keeps its class.
func classify(ctx context.Context, op string, timeout time.Duration, err error) error {
	var already *fault.Error
	if errors.As(err, &already) {
		return fmt.Errorf("%s: %w", op, err)
	}
	var api smithy.APIError
	if errors.As(err, &api) {
		return fmt.Errorf("%s: %w", op, apiError(err, api))
	}
	if ctx.Err() != nil && errors.Is(err, context.DeadlineExceeded) {
		return fault.Transient(fmt.Errorf("%s: no answer within %s (timeoutSeconds): %w", op, timeout, context.DeadlineExceeded))
	}
	return fmt.Errorf("%s: %w", op, connectors.ClassifyNet(err))
}

func apiError(err error, api smithy.APIError) error {
	re := &connectors.RequestError{Err: err}
	var (
		resp *awshttp.ResponseError
		wait time.Duration
	)
	if errors.As(err, &resp) && resp.Response != nil {
		re.StatusCode = resp.HTTPStatusCode()
		if resp.Response.Request != nil && resp.Response.Request.URL != nil {
			re.Host = resp.Response.Request.URL.Host
		}
		if s, perr := strconv.Atoi(resp.Response.Header.Get("Retry-After")); perr == nil && s > 0 {
			wait = time.Duration(s) * time.Second
		}
	}
	service := "ECR"
	if o := innermostOperation(err); o != nil && o.ServiceID != "" {
		service = o.ServiceID + " " + o.OperationName
	}
	code := api.ErrorCode()
	re.Reason = strings.TrimSpace(fmt.Sprintf("%s answered %s %s", service, statusOf(re.StatusCode), code))
	if msg := oneLine(api.ErrorMessage()); msg != "" {
		re.Reason += ": " + msg
	}
	sts := strings.HasPrefix(service, "STS")
	switch {
	case throttleCodes[code] || re.StatusCode == http.StatusTooManyRequests:
		re.Reason += " (throttled: retry later)"
		return fault.RetryAfter(re, max(wait, throttleWait))
	case serverCodes[code] || re.StatusCode >= 500:
		return fault.RetryAfter(re, wait)
	case credentialCodes[code] && sts:
		re.Reason += " (STS refused the credentials that sign AssumeRole: check accessKeyId and secretAccessKey, or the hub's own credentials)"
	case credentialCodes[code]:
		re.Reason += " (AWS refused the credentials: check accessKeyId and secretAccessKey, or that the session token has not expired)"
	case permissionCodes[code] && sts:
		re.Reason += " (the role's trust policy does not let this identity assume it, or externalId is wrong)"
	case permissionCodes[code]:
		re.Reason += " (the identity needs ecr:GetAuthorizationToken, and pull permissions on the repositories)"
	case code == "RequestTimeTooSkewed":
		re.Reason += " (the hub's clock is off: fix its time synchronisation)"
	}
	return fault.Permanent(re)
}

// innermostOperation is the operation that failed first: an STS
// AssumeRole under the ECR call that needed its credentials.
func innermostOperation(err error) *smithy.OperationError {
	var last *smithy.OperationError
	for e := err; e != nil; e = errors.Unwrap(e) {
		if o, ok := e.(*smithy.OperationError); ok {
			last = o
		}
	}
	return last
}

func statusOf(code int) string {
	if code == 0 {
		return ""
	}
	return strconv.Itoa(code)
}

// oneLine bounds AWS's message to one short line.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
