package agent

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dbcert-agent/dbcert-agent/agent/bundle"
	"github.com/dbcert-agent/dbcert-agent/agent/metrics"
)

// Metrics is the Observer that exports the daemon's state in Prometheus format.
//
// Series (instance label = the config name):
//
//	dbcert_certificate_not_after_seconds{instance}  effective expiry of the files on disk
//	dbcert_ca_not_after_seconds{instance}           earliest CA expiry
//	dbcert_next_renewal_seconds{instance}           when the next refresh is planned
//	dbcert_last_success_seconds{instance}           last successful refresh
//	dbcert_files_valid{instance}                    1 when the files are complete and valid at the moment of the scrape
//	dbcert_failed_permanently{instance}             1 when the last refresh failed with an error a retry cannot help
//	dbcert_refreshes_total{instance,result}         result: ok | retryable | permanent | write
//	dbcert_hook_runs_total{instance,result}         result: ok | error
//	dbcert_api_requests_total{endpoint,code}        every API and token request; code "error" on transport failure
type Metrics struct {
	notAfter, caNotAfter, next, lastOK, valid, failed *metrics.GaugeVec
	refreshes, hooks, requests                        *metrics.CounterVec
	reg                                               *metrics.Registry
	now                                               func() time.Time

	mu    sync.Mutex
	files map[string]*instReady // what Files reported, judged at each scrape
}

// NewMetrics registers the series in reg.
func NewMetrics(reg *metrics.Registry) *Metrics {
	m := &Metrics{
		files:      map[string]*instReady{},
		reg:        reg,
		now:        time.Now,
		notAfter:   reg.Gauge("dbcert_certificate_not_after_seconds", "Effective expiry of the client certificate on disk, Unix seconds.", "instance"),
		caNotAfter: reg.Gauge("dbcert_ca_not_after_seconds", "Earliest expiry of the server CA certificates on disk, Unix seconds.", "instance"),
		next:       reg.Gauge("dbcert_next_renewal_seconds", "When the next refresh is planned, Unix seconds.", "instance"),
		lastOK:     reg.Gauge("dbcert_last_success_seconds", "Time of the last successful refresh, Unix seconds.", "instance"),
		valid:      reg.Gauge("dbcert_files_valid", "1 when the instance's files are complete and valid now (certificate and login token not expired).", "instance"),
		failed:     reg.Gauge("dbcert_failed_permanently", "1 when the instance's last refresh failed with an error a retry cannot help (403, 404, bad credentials).", "instance"),
		refreshes:  reg.Counter("dbcert_refreshes_total", "Refresh attempts by result.", "instance", "result"),
		hooks:      reg.Counter("dbcert_hook_runs_total", "Hook runs by result.", "instance", "result"),
		requests:   reg.Counter("dbcert_api_requests_total", "Requests to cloud APIs and token endpoints by endpoint and HTTP status.", "endpoint", "code"),
	}
	reg.OnCollect(m.collect)
	return m
}

// collect sets dbcert_files_valid for the moment of the scrape: files reported valid
// earlier count as invalid once their certificate or login token has expired.
func (m *Metrics) collect() {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	for name, s := range m.files {
		v := 0.0
		if s.valid(now) {
			v = 1
		}
		m.valid.Set(v, name)
	}
}

// Files implements Observer.
func (m *Metrics) Files(instance string, b *bundle.Bundle, next time.Time) {
	s := &instReady{files: b != nil}
	if b != nil && (b.HasClientCert() || !b.TokenExpiry.IsZero()) {
		s.until = b.NotAfter()
	}
	m.mu.Lock()
	m.files[instance] = s
	m.mu.Unlock()
	if b == nil {
		m.valid.Set(0, instance)
		m.notAfter.Delete(instance)
		m.caNotAfter.Delete(instance)
	} else {
		m.valid.Set(1, instance)
		if b.HasClientCert() {
			m.notAfter.SetTime(b.NotAfter(), instance)
		}
		m.caNotAfter.SetTime(b.CANotAfter(), instance)
	}
	m.next.SetTime(next, instance)
}

// Refreshed implements Observer.
func (m *Metrics) Refreshed(instance, reason string) {
	switch reason {
	case "":
		m.failed.Set(0, instance)
		m.refreshes.Inc(instance, "ok")
		m.lastOK.SetTime(m.now(), instance)
	case reasonHook:
		// The refresh itself succeeded; HookRan counts the failure.
	default:
		v := 0.0
		if reason == reasonPermanent {
			v = 1
		}
		m.failed.Set(v, instance)
		m.refreshes.Inc(instance, reason)
	}
}

// HookRan implements Observer.
func (m *Metrics) HookRan(instance string, ok bool) {
	res := "ok"
	if !ok {
		res = "error"
	}
	m.hooks.Inc(instance, res)
}

// Removed implements Observer.
func (m *Metrics) Removed(instance string) {
	m.mu.Lock()
	defer m.mu.Unlock() // no collect in between sets the gauge again
	delete(m.files, instance)
	m.reg.DeleteMatching("instance", instance)
}

// Transport counts requests through base (http.DefaultTransport when nil) by endpoint.
func (m *Metrics) Transport(base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return countingTransport{base: base, requests: m.requests}
}

type countingTransport struct {
	base     http.RoundTripper
	requests *metrics.CounterVec
}

func (c countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.base.RoundTrip(r)
	code := "error"
	if err == nil {
		code = strconv.Itoa(resp.StatusCode)
	}
	c.requests.Inc(endpointName(r.URL.Path), code)
	return resp, err
}

// endpointName names an API call by the last element of its path: the custom verb of
// ".../instances/x:generateEphemeralCert", else the last segment ("connectSettings",
// "token"). Resource names (projects, instances) never become label values.
func endpointName(path string) string {
	seg := path[strings.LastIndex(path, "/")+1:]
	if i := strings.LastIndex(seg, ":"); i >= 0 {
		return seg[i+1:]
	}
	if strings.Contains(path, "/operations/") {
		return "operations.get"
	}
	if seg == "" {
		return "root"
	}
	return seg
}
