package oci

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
	"oras.land/oras-go/v2/registry"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/fault"
)

// Media types of the manifests a tag may point at. HEAD and GET send them
// all: a registry answers a request without them with a Docker schema 1
// manifest, or converts an index to one platform's manifest, and the digest
// would not be the one that a pull by tag resolves to.
const (
	MediaTypeOCIIndex           = "application/vnd.oci.image.index.v1+json"
	MediaTypeOCIManifest        = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
)

var manifestAccept = []string{MediaTypeOCIIndex, MediaTypeOCIManifest, MediaTypeDockerManifestList, MediaTypeDockerManifest}

// defaultPageSize is the tag and catalog page size when the caller gives
// none; maxPageSize bounds what a caller may ask.
const (
	defaultPageSize = 100
	maxPageSize     = 1000
)

// Ping checks that /v2/ answers and that the credentials are accepted
// (a 401 challenge is followed: basic or bearer token).
func (c *Connector) Ping(ctx context.Context) error {
	if err := c.ready(); err != nil {
		return err
	}
	return c.session().ping(ctx)
}

func (s *session) ping(ctx context.Context) error {
	return s.do(ctx, request{method: http.MethodGet, path: "/v2/"}, nil)
}

// ListTags lists one page of a repository's tags (`n` and `last`, the
// next page from the Link header).
func (c *Connector) ListTags(ctx context.Context, repo string, o connectors.ListOptions) (connectors.Page[connectors.Tag], error) {
	if err := c.ready(); err != nil {
		return connectors.Page[connectors.Tag]{}, err
	}
	return c.session().listTags(ctx, repo, o)
}

func (s *session) listTags(ctx context.Context, repo string, o connectors.ListOptions) (connectors.Page[connectors.Tag], error) {
	var page connectors.Page[connectors.Tag]
	if err := s.c.repoOK(repo); err != nil {
		return page, err
	}
	q, err := pageQuery(o)
	if err != nil {
		return page, err
	}
	path := "/v2/" + repo + "/tags/list"
	var body struct {
		Tags []string `json:"tags"`
	}
	var next string
	err = s.do(s.withScope(ctx, repo), request{method: http.MethodGet, path: path, query: q}, func(resp *http.Response, r io.Reader) error {
		if err := decode(r, &body); err != nil {
			return err
		}
		// The spec wants lexical order; distribution v2.8 returns tags in
		// storage order. Sorting a page is a no-op for a compliant
		// registry and gives listings a stable order for the others.
		slices.Sort(body.Tags)
		next = nextCursor(resp)
		return nil
	})
	if err != nil {
		return page, err
	}
	page.Items = make([]connectors.Tag, 0, len(body.Tags))
	for _, t := range body.Tags {
		page.Items = append(page.Items, connectors.Tag{Name: t})
	}
	page.Next = next
	return page, nil
}

// ListRepositories lists one page of the registry's catalog
// (/v2/_catalog). Many hosted registries refuse the catalog: that is a
// permanent error, not an empty list.
func (c *Connector) ListRepositories(ctx context.Context, o connectors.ListOptions) (connectors.Page[connectors.Repository], error) {
	var page connectors.Page[connectors.Repository]
	if err := c.ready(); err != nil {
		return page, err
	}
	q, err := pageQuery(o)
	if err != nil {
		return page, err
	}
	s := c.session()
	// The catalog needs its own scope in the token flow.
	ctx = withCatalogScope(ctx, c.base.Host)
	var body struct {
		Repositories []string `json:"repositories"`
	}
	var next string
	err = s.do(ctx, request{method: http.MethodGet, path: "/v2/_catalog", query: q}, func(resp *http.Response, r io.Reader) error {
		if err := decode(r, &body); err != nil {
			return err
		}
		slices.Sort(body.Repositories)
		next = nextCursor(resp)
		return nil
	})
	if err != nil {
		return page, err
	}
	page.Items = make([]connectors.Repository, 0, len(body.Repositories))
	for _, r := range body.Repositories {
		page.Items = append(page.Items, connectors.Repository{ID: r, FullName: r})
	}
	page.Next = next
	return page, nil
}

// ListBranches is not a registry concept.
func (c *Connector) ListBranches(context.Context, string, connectors.ListOptions) (connectors.Page[connectors.Branch], error) {
	return connectors.Page[connectors.Branch]{}, fault.Permanent(fmt.Errorf("registry.oci: branches: %w", errors.ErrUnsupported))
}

// ResolveTag returns the digest a tag points at: HEAD with every manifest
// media type accepted, Docker-Content-Digest when the registry sends it,
// else a GET and the sha256 of the body (the header is optional in the
// OCI spec).
func (c *Connector) ResolveTag(ctx context.Context, repo, tag string) (string, error) {
	if err := c.ready(); err != nil {
		return "", err
	}
	return c.session().resolveTag(ctx, repo, tag)
}

func (s *session) resolveTag(ctx context.Context, repo, tag string) (string, error) {
	if err := s.c.repoOK(repo); err != nil {
		return "", err
	}
	if err := tagOK(s.c.base.Host, repo, tag); err != nil {
		return "", err
	}
	ctx = s.withScope(ctx, repo)
	path := "/v2/" + repo + "/manifests/" + tag
	var d digest.Digest
	err := s.do(ctx, request{method: http.MethodHead, path: path, accept: manifestAccept}, func(resp *http.Response, _ io.Reader) error {
		if h := resp.Header.Get("Docker-Content-Digest"); h != "" {
			if parsed, err := digest.Parse(h); err == nil {
				d = parsed
			}
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	if d != "" {
		return d.String(), nil
	}
	m, err := s.fetch(ctx, repo, tag)
	if err != nil {
		return "", err
	}
	return m.Digest, nil
}

// FetchManifest GETs a manifest or index by tag or digest. Digest is the
// sha256 of the bytes received (for a digest reference, in its algorithm,
// and it must match the reference).
func (c *Connector) FetchManifest(ctx context.Context, repo, reference string) (connectors.Manifest, error) {
	if err := c.ready(); err != nil {
		return connectors.Manifest{}, err
	}
	s := c.session()
	if err := c.repoOK(repo); err != nil {
		return connectors.Manifest{}, err
	}
	if _, err := digest.Parse(reference); err != nil {
		if err := tagOK(c.base.Host, repo, reference); err != nil {
			return connectors.Manifest{}, err
		}
	}
	m, err := s.fetch(s.withScope(ctx, repo), repo, reference)
	if err != nil {
		return m, err
	}
	if want, err := digest.Parse(reference); err == nil && m.Digest != want.String() {
		return connectors.Manifest{}, fault.Permanent(&DigestMismatchError{Repo: repo, Want: want.String(), Got: m.Digest})
	}
	return m, nil
}

// VerifyDigest fetches the manifest by digest and checks that its bytes
// hash to it.
func (c *Connector) VerifyDigest(ctx context.Context, repo, dgst string) error {
	if err := c.ready(); err != nil {
		return err
	}
	if err := c.repoOK(repo); err != nil {
		return err
	}
	d, err := digest.Parse(dgst)
	if err != nil {
		return fault.Permanent(fmt.Errorf("registry.oci: %q is not a digest (algorithm:hex): %w", dgst, err))
	}
	s := c.session()
	m, err := s.fetch(s.withScope(ctx, repo), repo, d.String())
	if err != nil {
		return err
	}
	if m.Digest != d.String() {
		return fault.Permanent(&DigestMismatchError{Repo: repo, Want: d.String(), Got: m.Digest})
	}
	return nil
}

// DigestMismatchError is content that does not hash to its digest.
type DigestMismatchError struct{ Repo, Want, Got string }

func (e *DigestMismatchError) Error() string {
	return fmt.Sprintf("registry.oci: %s@%s: the content hashes to %s", e.Repo, e.Want, e.Got)
}

// fetch GETs a manifest and hashes it: with the reference's algorithm when
// it is a digest, sha256 otherwise.
func (s *session) fetch(ctx context.Context, repo, reference string) (connectors.Manifest, error) {
	alg := digest.SHA256
	if d, err := digest.Parse(reference); err == nil {
		alg = d.Algorithm()
	}
	var m connectors.Manifest
	path := "/v2/" + repo + "/manifests/" + reference
	err := s.do(ctx, request{method: http.MethodGet, path: path, accept: manifestAccept}, func(resp *http.Response, r io.Reader) error {
		b, err := readAll(r)
		if err != nil {
			return err
		}
		m = connectors.Manifest{
			MediaType: mediaType(resp.Header.Get("Content-Type"), b),
			Digest:    alg.FromBytes(b).String(),
			Size:      int64(len(b)),
			Body:      b,
		}
		return nil
	})
	return m, err
}

// mediaType is the Content-Type, or the manifest's own mediaType field
// when the registry sends a generic one.
func mediaType(contentType string, body []byte) string {
	mt, _, err := mime.ParseMediaType(contentType)
	if err == nil && mt != "application/json" && mt != "text/plain" && mt != "application/octet-stream" {
		return mt
	}
	var doc struct {
		MediaType string `json:"mediaType"`
	}
	if json.Unmarshal(body, &doc) == nil && doc.MediaType != "" {
		return doc.MediaType
	}
	return mt
}

func (c *Connector) repoOK(repo string) error {
	if err := validRepo(c.base.Host, repo); err != nil {
		return fault.Permanent(fmt.Errorf("registry.oci: repository %q %w", repo, err))
	}
	return nil
}

func tagOK(host, repo, tag string) error {
	ref := registry.Reference{Registry: host, Repository: repo, Reference: tag}
	if err := ref.ValidateReferenceAsTag(); err != nil {
		return fault.Permanent(fmt.Errorf("registry.oci: %q is not a valid tag", tag))
	}
	return nil
}

func decode(r io.Reader, v any) error {
	b, err := readAll(r)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("malformed JSON answer: %w", err)
	}
	return nil
}

// Cursors are the query of the next page (base64url), never a URL: a
// caller cannot steer a request to another host or path through one.

func pageQuery(o connectors.ListOptions) (url.Values, error) {
	q := url.Values{}
	if o.Cursor != "" {
		raw, err := base64.RawURLEncoding.DecodeString(o.Cursor)
		if err != nil {
			return nil, fault.Permanent(errors.New("registry.oci: malformed page cursor"))
		}
		parsed, err := url.ParseQuery(string(raw))
		if err != nil {
			return nil, fault.Permanent(errors.New("registry.oci: malformed page cursor"))
		}
		q = parsed
	}
	n := o.Limit
	if n <= 0 {
		if v, err := strconv.Atoi(q.Get("n")); err == nil && v > 0 {
			n = v
		} else {
			n = defaultPageSize
		}
	}
	n = min(n, maxPageSize)
	q.Set("n", strconv.Itoa(n))
	return q, nil
}

// nextCursor reads the Link header (RFC 8288, rel="next"), which the spec
// makes the only sign of a next page. Guessing one from a full page would
// loop forever on a registry that ignores last.
func nextCursor(resp *http.Response) string {
	for _, link := range resp.Header.Values("Link") {
		for _, part := range strings.Split(link, ",") {
			target, params, ok := strings.Cut(strings.TrimSpace(part), ";")
			if !ok || !strings.Contains(strings.ReplaceAll(params, " ", ""), `rel="next"`) {
				continue
			}
			u, err := url.Parse(strings.Trim(strings.TrimSpace(target), "<>"))
			if err != nil {
				continue
			}
			return base64.RawURLEncoding.EncodeToString([]byte(u.Query().Encode()))
		}
	}
	return ""
}
