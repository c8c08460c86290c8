// Package armclient builds the options every Azure Resource Manager client of vmrescue shares, and
// carries the incident's correlation id to ARM.
//
// Correlation: each incident has one correlation id, a UUID derived from the incident id, sent as
// x-ms-correlation-request-id on every ARM request made with a context from WithCorrelation, polls
// of long-running operations included, so that ARM's activity log ties all of an incident's
// operations together. The header is set by Correlation, a per-call policy of the ARM clients
// only: the same context reaches Blob Storage, whose shared-key signature covers every x-ms-
// header, and Storage has no use for it.
package armclient

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
)

// PublicEndpoint is Azure Resource Manager in the public cloud.
const PublicEndpoint = "https://management.azure.com"

// CorrelationHeader is the header ARM records as the request's correlation id.
const CorrelationHeader = "x-ms-correlation-request-id"

// CorrelationID is the incident's correlation id: a version-8 UUID made from the SHA-256 of the
// incident id, so that every stage of the incident sends the same one without storing it.
func CorrelationID(incidentID string) string {
	sum := sha256.Sum256([]byte("vmrescue-correlation/" + incidentID))
	b := sum[:16]
	b[6] = b[6]&0x0f | 0x80 // version 8
	b[8] = b[8]&0x3f | 0x80 // RFC 9562 variant
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

type correlationKey struct{}

// WithCorrelation returns ctx carrying the incident's correlation id for every ARM request made
// with it.
func WithCorrelation(ctx context.Context, incidentID string) context.Context {
	return context.WithValue(ctx, correlationKey{}, CorrelationID(incidentID))
}

// Correlation is the per-call policy that sends the correlation id carried by the request's
// context. Add it to the ARM clients' PerCallPolicies (Options does).
type Correlation struct{}

// Do implements policy.Policy.
func (Correlation) Do(req *policy.Request) (*http.Response, error) {
	if id, ok := req.Raw().Context().Value(correlationKey{}).(string); ok && id != "" {
		req.Raw().Header.Set(CorrelationHeader, id)
	}
	return req.Next()
}

// WithPolicies adds the policies every vmrescue ARM client carries to o (nil makes new options).
func WithPolicies(o *arm.ClientOptions) *arm.ClientOptions {
	if o == nil {
		o = &arm.ClientOptions{}
	}
	c := *o
	c.PerCallPolicies = append(append([]policy.Policy(nil), o.PerCallPolicies...), Correlation{})
	return &c
}

// Options returns client options for ARM at endpoint, with the correlation policy. The public
// endpoint gets the SDK's defaults; any other must be https, except a loopback http endpoint (the local simulator), for
// which the bearer-token policy is allowed to send its token over plain http.
func Options(endpoint string) (*arm.ClientOptions, error) {
	endpoint = strings.TrimRight(endpoint, "/")
	if endpoint == "" || strings.EqualFold(endpoint, PublicEndpoint) {
		return WithPolicies(nil), nil
	}
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("ARM endpoint %q is not an absolute URL", endpoint)
	}
	insecure := false
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && IsLoopback(u.Hostname()):
		insecure = true
	default:
		return nil, fmt.Errorf("ARM endpoint %q must use https (plain http only on loopback)", endpoint)
	}
	return WithPolicies(&arm.ClientOptions{ClientOptions: policy.ClientOptions{
		Cloud: cloud.Configuration{
			ActiveDirectoryAuthorityHost: cloud.AzurePublic.ActiveDirectoryAuthorityHost,
			Services: map[cloud.ServiceName]cloud.ServiceConfiguration{
				cloud.ResourceManager: {Endpoint: endpoint, Audience: cloud.AzurePublic.Services[cloud.ResourceManager].Audience},
			},
		},
		InsecureAllowCredentialWithHTTP: insecure,
	}}), nil
}

// IsLoopback reports whether host is a loopback name or address.
func IsLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// PollFrequency is how often a poller asks about a long-running operation when ARM names no
// Retry-After.
const PollFrequency = 2 * time.Second

// LRO starts a long-running operation with begin and waits for it, all within timeout.
func LRO[T any](ctx context.Context, timeout time.Duration, begin func(ctx context.Context) (*runtime.Poller[T], error)) (T, error) {
	var zero T
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	p, err := begin(ctx)
	if err != nil {
		return zero, err
	}
	return p.PollUntilDone(ctx, &runtime.PollUntilDoneOptions{Frequency: PollFrequency})
}

// Call makes one request within timeout.
func Call[T any](ctx context.Context, timeout time.Duration, do func(ctx context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return do(ctx)
}

// IsLoopbackEndpoint reports an http endpoint on loopback: the local simulator.
func IsLoopbackEndpoint(endpoint string) bool {
	u, err := url.Parse(endpoint)
	return err == nil && u.Scheme == "http" && IsLoopback(u.Hostname())
}

// LoopbackCredential is the static token credential for an ARM endpoint on loopback (the local
// simulator, which checks no token). Use it for nothing else.
func LoopbackCredential() azcore.TokenCredential { return loopbackCredential{} }

type loopbackCredential struct{}

func (loopbackCredential) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{Token: "vmrescue-loopback", ExpiresOn: time.Now().Add(time.Hour)}, nil
}
