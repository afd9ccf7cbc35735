// Package ecr is the registry.ecr connector: Amazon ECR private
// registries. The registry password is a token that ECR's API
// (GetAuthorizationToken, aws-sdk-go-v2) mints for an AWS identity:
// static access keys, the hub's default credential chain (its IAM role),
// or a role assumed through STS. The token ("AWS:<password>", base64) is
// cached until shortly before it expires, and the distribution API calls
// (ping, catalog, tags, tag → digest, manifests) go through the
// registry.oci connector with it as Basic credentials.
package ecr

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsecr "github.com/aws/aws-sdk-go-v2/service/ecr"
	"golang.org/x/sync/singleflight"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/oci"
	"inthub.dev/pkg/fault"
)

// Type is the integration type id.
const Type = "registry.ecr"

func init() {
	oci.Register(connectors.Info{
		Type:         Type,
		Provider:     "ecr",
		DisplayName:  "Amazon ECR",
		Description:  "An Amazon ECR private registry with static keys, the hub's IAM role or an assumed role: authorization token, repositories, tags, tag → digest, manifests.",
		Capabilities: []string{"auth", "ping", "repos", "tags", "digest", "manifest"},
	}, New)
}

// Interface guards.
var (
	_ connectors.Connector     = (*Connector)(nil)
	_ connectors.ImageRegistry = (*Connector)(nil)
	_ connectors.Discoverer    = (*Connector)(nil)
)

// Auth modes.
const (
	// AuthStatic signs with the configured access key.
	AuthStatic = "static"
	// AuthDefault uses the hub's default credential chain (environment,
	// shared files, web identity, the container's or instance's IAM role).
	AuthDefault = "default"
	// AuthAssumeRole assumes roleArn through STS, signing the AssumeRole
	// call with the static key when one is configured, else with the
	// default chain.
	AuthAssumeRole = "assume_role"
)

// Config is the integration's config (schemas/config/registry.ecr.json).
type Config struct {
	Region string `json:"region"`
	// RegistryID is the AWS account id of the registry; with Region it
	// gives the registry endpoint.
	RegistryID string `json:"registryId,omitempty"`
	// Endpoint overrides the registry endpoint
	// (https://<registryId>.dkr.ecr.<region>.amazonaws.com).
	Endpoint string `json:"endpoint,omitempty"`
	AuthMode string `json:"authMode,omitempty"`
	// AccessKeyID is an identifier, not a secret (AWS prints it in
	// CloudTrail); the secret key is an AuthRef.
	AccessKeyID string `json:"accessKeyId,omitempty"`
	// SecretAccessKey is the AuthRef URI of the secret key; the
	// integration's AuthRef when empty.
	SecretAccessKey string `json:"secretAccessKey,omitempty"`
	// SessionToken is the AuthRef URI of a session token, for temporary
	// keys.
	SessionToken    string `json:"sessionToken,omitempty"`
	RoleARN         string `json:"roleArn,omitempty"`
	ExternalID      string `json:"externalId,omitempty"`
	RoleSessionName string `json:"roleSessionName,omitempty"`
	// APIEndpoint and STSEndpoint override the ECR API and STS endpoints
	// (VPC endpoints, FIPS, tests).
	APIEndpoint string `json:"apiEndpoint,omitempty"`
	STSEndpoint string `json:"stsEndpoint,omitempty"`
	// Insecure, the probe repository and tag, the timeouts.
	oci.Settings
}

// Connector is one ECR integration. It is safe for concurrent use.
type Connector struct {
	// Registry does the distribution API calls with the token as
	// password.
	oci.Registry
	cfg     connectors.Config
	conf    Config
	timeout time.Duration
	log     *slog.Logger
	now     func() time.Time

	mu  sync.Mutex
	api *awsecr.Client // built at first use
	tok token          // zero when none is cached
	sf  singleflight.Group
}

var (
	regionRE     = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-\d{1,2}$`)
	accountRE    = regexp.MustCompile(`^\d{12}$`)
	accessKeyRE  = regexp.MustCompile(`^(AKIA|ASIA)[A-Z0-9]{12,124}$`)
	roleARNRE    = regexp.MustCompile(`^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$`)
	sessionRE    = regexp.MustCompile(`^[\w+=,.@-]{2,64}$`)
	externalIDRE = regexp.MustCompile(`^[\w+=,.@:/-]+$`)
)

// New builds a connector without I/O; a config that decodes but is wrong
// is reported by Validate and by every call.
func New(cfg connectors.Config) (*Connector, error) {
	var conf Config
	if err := oci.DecodeConfig(cfg, Type, &conf); err != nil {
		return nil, err
	}
	if conf.AuthMode == "" {
		conf.AuthMode = AuthStatic
	}
	if conf.SecretAccessKey == "" && conf.AccessKeyID != "" {
		conf.SecretAccessKey = cfg.AuthRef
	}
	c := &Connector{cfg: cfg, conf: conf, timeout: oci.Timeout(conf.TimeoutSeconds), log: oci.Logger(cfg, "ecr"), now: cfg.Now}
	if c.now == nil {
		c.now = time.Now
	}
	reg := c.registry(conf.ProbeRepository)
	c.Registry = oci.Embed(oci.Provider{Type: Type, Name: "ecr"}, reg, c.check(reg))
	return c, nil
}

// registry is the distribution connector for probe.
func (c *Connector) registry(probe string) *oci.Connector {
	return oci.NewWithOptions(c.cfg, c.ociConfig(probe), oci.Options{Credentials: c.credentials, Refused: c.dropToken})
}

// RegistryEndpoint is the registry host of an account in a region.
func RegistryEndpoint(registryID, region string) string {
	suffix := "amazonaws.com"
	if strings.HasPrefix(region, "cn-") {
		suffix = "amazonaws.com.cn"
	}
	return "https://" + registryID + ".dkr.ecr." + region + "." + suffix
}

func (c *Connector) endpoint() string {
	if c.conf.Endpoint != "" {
		return c.conf.Endpoint
	}
	if c.conf.RegistryID == "" || c.conf.Region == "" {
		return ""
	}
	return RegistryEndpoint(c.conf.RegistryID, c.conf.Region)
}

func (c *Connector) ociConfig(probe string) oci.Config {
	return oci.Config{
		Endpoint: c.endpoint(),
		Settings: c.conf.Probing(probe),
	}
}

func invalid(field, format string, args ...any) error {
	return fault.Permanent(configError(field, fmt.Sprintf(format, args...)))
}

func configError(field, reason string) error { return &ConfigError{Field: field, Reason: reason} }

// ConfigError names the config field that is wrong.
type ConfigError struct {
	Field  string
	Reason string
}

func (e *ConfigError) Error() string { return "registry.ecr: " + e.Field + " " + e.Reason }

func (c *Connector) check(reg *oci.Connector) error {
	conf := c.conf
	if !regionRE.MatchString(conf.Region) {
		return invalid("region", "must be an AWS region, e.g. us-east-1")
	}
	if conf.RegistryID != "" && !accountRE.MatchString(conf.RegistryID) {
		return invalid("registryId", "must be the registry's 12-digit AWS account id")
	}
	if conf.RegistryID == "" && conf.Endpoint == "" {
		return invalid("registryId", "is required (or give the registry endpoint)")
	}
	if err := reg.Validate(); err != nil {
		return oci.Reword(err, configError)
	}
	for field, v := range map[string]string{"apiEndpoint": conf.APIEndpoint, "stsEndpoint": conf.STSEndpoint} {
		if v == "" {
			continue
		}
		u, err := url.Parse(v)
		if err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" || (u.Scheme != "https" && u.Scheme != "http") {
			return invalid(field, "must be an absolute http(s) URL without credentials or query")
		}
		if u.Scheme == "http" && !conf.Insecure {
			return invalid(field, "is plain http: set insecure to true to allow it, or use https")
		}
	}
	if conf.AccessKeyID != "" && !accessKeyRE.MatchString(conf.AccessKeyID) {
		// Never quote it: people paste the secret key here.
		return invalid("accessKeyId", "is not an AWS access key id (AKIA… or ASIA…)")
	}
	for field, v := range map[string]string{"secretAccessKey": conf.SecretAccessKey, "sessionToken": conf.SessionToken} {
		if v != "" && !strings.HasPrefix(v, "authref://") {
			return invalid(field, "must be an AuthRef URI (authref://...), not a secret in clear")
		}
	}
	if conf.AccessKeyID == "" && (conf.SecretAccessKey != "" || conf.SessionToken != "") {
		return invalid("accessKeyId", "is required when secretAccessKey or sessionToken is set")
	}
	switch conf.AuthMode {
	case AuthStatic:
		if conf.AccessKeyID == "" {
			return invalid("accessKeyId", "is required with authMode static (or use authMode default for the hub's IAM role)")
		}
		if conf.SecretAccessKey == "" {
			return invalid("secretAccessKey", "is required with authMode static")
		}
	case AuthDefault:
		if conf.AccessKeyID != "" {
			return invalid("accessKeyId", "must not be set with authMode default (the hub's credential chain signs)")
		}
	case AuthAssumeRole:
		if conf.AccessKeyID != "" && conf.SecretAccessKey == "" {
			return invalid("secretAccessKey", "is required when accessKeyId is set")
		}
	default:
		return invalid("authMode", "must be static, default or assume_role")
	}
	if conf.AuthMode == AuthAssumeRole {
		if !roleARNRE.MatchString(conf.RoleARN) {
			return invalid("roleArn", "must be an IAM role ARN (arn:aws:iam::<account>:role/<name>)")
		}
	} else if conf.RoleARN != "" || conf.ExternalID != "" || conf.RoleSessionName != "" || conf.STSEndpoint != "" {
		return invalid("roleArn", "and the other assume-role fields need authMode assume_role")
	}
	if conf.ExternalID != "" && (len(conf.ExternalID) < 2 || len(conf.ExternalID) > 1224 || !externalIDRE.MatchString(conf.ExternalID)) {
		return invalid("externalId", "must be 2 to 1224 characters of letters, digits and +=,.@:/-")
	}
	if conf.RoleSessionName != "" && !sessionRE.MatchString(conf.RoleSessionName) {
		return invalid("roleSessionName", "must be 2 to 64 characters of letters, digits and +=,.@-")
	}
	return nil
}

// Close drops the cached token; the connector stays usable.
func (c *Connector) Close() error {
	c.dropToken()
	return nil
}

// httpClient is the caller's egress-controlled client, for every call
// whose address the config can steer (ECR API, STS, registry).
func (c *Connector) httpClient() *http.Client { return oci.Client(c.cfg) }

// awsString is aws.String for an optional field.
func awsString(s string) *string {
	if s == "" {
		return nil
	}
	return aws.String(s)
}
