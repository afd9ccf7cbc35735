package ecr

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	awsecr "github.com/aws/aws-sdk-go-v2/service/ecr"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"inthub.dev/pkg/fault"
)

// token is a registry password minted by GetAuthorizationToken.
type token struct {
	user, pass string
	expires    time.Time
	// refresh is when a new one is minted: shortly before expires, so a
	// token never expires between the check and its use.
	refresh time.Time
	// proxy is the registry endpoint ECR says the token is for.
	proxy string
}

// refreshMargin is how long before expiry a token is replaced: a quarter
// of its lifetime, at most 15 minutes (ECR tokens live 12 hours).
func refreshMargin(lifetime time.Duration) time.Duration {
	return min(15*time.Minute, lifetime/4)
}

// credentials is the oci.Credentials hook: the cached token, or a new one.
func (c *Connector) credentials(ctx context.Context) (string, string, error) {
	t, err := c.token(ctx, false)
	if err != nil {
		return "", "", err
	}
	return t.user, t.pass, nil
}

// dropToken forgets the cached token (the registry refused it).
func (c *Connector) dropToken() {
	c.mu.Lock()
	c.tok = token{}
	c.mu.Unlock()
}

// token returns the cached token while it is fresh, else mints one.
// Concurrent callers share one GetAuthorizationToken call. fresh forces a
// mint (TestConnection proves the AWS identity now, not 11 hours ago).
func (c *Connector) token(ctx context.Context, fresh bool) (token, error) {
	if !fresh {
		c.mu.Lock()
		t := c.tok
		c.mu.Unlock()
		if t.pass != "" && c.now().Before(t.refresh) {
			return t, nil
		}
	}
	ch := c.sf.DoChan("token", func() (any, error) { return c.mint(ctx) })
	select {
	case r := <-ch:
		if r.Err != nil {
			return token{}, r.Err
		}
		return r.Val.(token), nil
	case <-ctx.Done():
		return token{}, fault.Transient(fmt.Errorf("ecr: GetAuthorizationToken: %w", ctx.Err()))
	}
}

func (c *Connector) mint(ctx context.Context) (token, error) {
	const op = "ecr: GetAuthorizationToken"
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	api, err := c.client(ctx)
	if err != nil {
		return token{}, fmt.Errorf("%s: %w", op, err)
	}
	start := c.now()
	out, err := api.GetAuthorizationToken(ctx, &awsecr.GetAuthorizationTokenInput{})
	if err != nil {
		return token{}, classify(ctx, op, c.timeout, err)
	}
	if len(out.AuthorizationData) == 0 || out.AuthorizationData[0].AuthorizationToken == nil {
		return token{}, fault.Transient(fmt.Errorf("%s: the answer holds no authorization data", op))
	}
	d := out.AuthorizationData[0]
	raw, err := base64.StdEncoding.DecodeString(aws.ToString(d.AuthorizationToken))
	if err != nil {
		return token{}, fault.Transient(fmt.Errorf("%s: the authorization token is not base64", op))
	}
	user, pass, ok := strings.Cut(string(raw), ":")
	if !ok || user == "" || pass == "" {
		return token{}, fault.Transient(fmt.Errorf("%s: the authorization token is not user:password", op))
	}
	t := token{user: user, pass: pass, proxy: aws.ToString(d.ProxyEndpoint)}
	if d.ExpiresAt != nil {
		t.expires = *d.ExpiresAt
	} else {
		// ECR documents 12 hours; without a date, assume less.
		t.expires = start.Add(time.Hour)
	}
	if !t.expires.After(start) {
		return token{}, fault.Transient(fmt.Errorf("%s: the token expired at %s, before it was received (check the hub's clock)", op, t.expires.UTC().Format(time.RFC3339)))
	}
	t.refresh = t.expires.Add(-refreshMargin(t.expires.Sub(start)))
	c.mu.Lock()
	c.tok = t
	c.mu.Unlock()
	c.log.DebugContext(ctx, "ecr authorization token minted", "expiresAt", t.expires.UTC().Format(time.RFC3339))
	return t, nil
}

// client builds the ECR API client on first use (loading the default
// credential chain reads files and environment, which New must not). A
// failure is not kept: the next call tries again.
func (c *Connector) client(ctx context.Context) (*awsecr.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.api != nil {
		return c.api, nil
	}
	creds, err := c.awsCredentials(ctx)
	if err != nil {
		return nil, err
	}
	c.api = awsecr.New(awsecr.Options{
		Region:       c.conf.Region,
		Credentials:  creds,
		HTTPClient:   c.httpClient(),
		BaseEndpoint: awsString(c.conf.APIEndpoint),
		// Drivers never retry: the worker frame does, with the class.
		Retryer: aws.NopRetryer{},
	})
	return c.api, nil
}

// awsCredentials is the identity that signs GetAuthorizationToken.
func (c *Connector) awsCredentials(ctx context.Context) (aws.CredentialsProvider, error) {
	switch c.conf.AuthMode {
	case AuthStatic:
		return c.staticCredentials(), nil
	case AuthDefault:
		return c.defaultCredentials(ctx)
	}
	base := c.staticCredentials()
	if c.conf.AccessKeyID == "" {
		var err error
		if base, err = c.defaultCredentials(ctx); err != nil {
			return nil, err
		}
	}
	client := sts.New(sts.Options{
		Region:       c.conf.Region,
		Credentials:  base,
		HTTPClient:   c.httpClient(),
		BaseEndpoint: awsString(c.conf.STSEndpoint),
		Retryer:      aws.NopRetryer{},
	})
	session := c.conf.RoleSessionName
	if session == "" {
		// CloudTrail shows it: name the integration.
		session = "inthub-" + strings.ReplaceAll(c.cfg.IntegrationID, "-", "")
		session = session[:min(64, len(session))]
	}
	p := stscreds.NewAssumeRoleProvider(client, c.conf.RoleARN, func(o *stscreds.AssumeRoleOptions) {
		o.RoleSessionName = session
		o.ExternalID = awsString(c.conf.ExternalID)
		o.Duration = stscreds.DefaultDuration
	})
	// The assumed role's keys are kept until shortly before they expire.
	return aws.NewCredentialsCache(p), nil
}

// staticCredentials resolves the key's AuthRefs at each signing: ECR
// tokens are minted rarely, and a rotated secret is picked up.
func (c *Connector) staticCredentials() aws.CredentialsProvider {
	return aws.CredentialsProviderFunc(func(ctx context.Context) (aws.Credentials, error) {
		secret, err := c.resolve(ctx, "secretAccessKey", c.conf.SecretAccessKey)
		if err != nil {
			return aws.Credentials{}, err
		}
		creds := aws.Credentials{AccessKeyID: c.conf.AccessKeyID, SecretAccessKey: secret, Source: "inthub"}
		if c.conf.SessionToken != "" {
			if creds.SessionToken, err = c.resolve(ctx, "sessionToken", c.conf.SessionToken); err != nil {
				return aws.Credentials{}, err
			}
		}
		return creds, nil
	})
}

func (c *Connector) resolve(ctx context.Context, field, ref string) (string, error) {
	if c.cfg.Secrets == nil {
		return "", fault.Permanent(fmt.Errorf("cannot resolve the %s AuthRef: no secret resolver configured", field))
	}
	b, err := c.cfg.Secrets.Resolve(ctx, ref)
	if err != nil {
		if fault.ClassOf(err) == fault.ClassUnknown {
			err = fault.Permanent(err)
		}
		return "", fmt.Errorf("cannot resolve the %s AuthRef: %w", field, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// defaultCredentials is the hub's own credential chain. Its HTTP calls
// (instance metadata, container credentials, SSO) use the SDK's client,
// not the egress-controlled one: they reach the hub's own metadata
// service, which no user config can steer, and which the egress policy
// rightly refuses for user endpoints.
func (c *Connector) defaultCredentials(ctx context.Context) (aws.CredentialsProvider, error) {
	if !c.cfg.HubIdentity {
		return nil, fault.Permanent(errors.New("signing with the hub's own AWS identity (authMode default, or assume_role without keys) is not allowed on this hub: " +
			"use authMode static or assume_role with an access key, or ask the operator to start the services with --allow-hub-identity"))
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion(c.conf.Region))
	if err != nil {
		return nil, fault.Permanent(fmt.Errorf("the hub's AWS configuration does not load: %w", err))
	}
	if cfg.Credentials == nil {
		return nil, fault.Permanent(errors.New("the hub has no AWS credentials (authMode default needs an IAM role or AWS_* environment)"))
	}
	return cfg.Credentials, nil
}
