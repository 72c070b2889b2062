package emulator_test

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"strings"
	"testing"

	"github.com/dbcert-agent/dbcert-agent/agent/emulator"
)

// TestConnectSettingsAddresses: ipAddresses, dnsName, dnsNames and pscEnabled are as set
// per instance; the default is one PRIMARY 127.0.0.1.
func TestConnectSettingsAddresses(t *testing.T) {
	e := start(t, emulator.Options{})
	e.AddCloudSQLInstance("my-proj", "mysql", emulator.CloudSQLInstance{DatabaseVersion: "MYSQL_8_0",
		IPAddresses: []emulator.IPMapping{{Type: "PRIVATE", IPAddress: "127.0.0.5"}}, DNSName: "ab.x.sql.goog.", PSCEnabled: true})
	tok, _ := e.AccessToken()
	m := call(t, e, "GET", "sql/v1beta4/projects/my-proj/instances/mysql/connectSettings", tok, "").json(t)
	ips := m["ipAddresses"].([]any)
	if len(ips) != 1 || ips[0].(map[string]any)["type"] != "PRIVATE" || ips[0].(map[string]any)["ipAddress"] != "127.0.0.5" {
		t.Errorf("ipAddresses %v", ips)
	}
	if m["databaseVersion"] != "MYSQL_8_0" || m["dnsName"] != "ab.x.sql.goog." || m["pscEnabled"] != true {
		t.Errorf("settings %v", m)
	}
	if dn := m["dnsNames"].([]any); len(dn) != 1 || dn[0].(map[string]any)["connectionType"] != "PRIVATE_SERVICE_CONNECT" {
		t.Errorf("dnsNames %v", dn)
	}
	d := call(t, e, "GET", "v1/projects/my-proj/instances/orders-pg/connectSettings", tok, "").json(t)
	if ips := d["ipAddresses"].([]any); len(ips) != 1 || ips[0].(map[string]any)["ipAddress"] != "127.0.0.1" {
		t.Errorf("default ipAddresses %v", ips)
	}
	if _, ok := d["dnsName"]; ok {
		t.Errorf("dnsName sent for an instance without one: %v", d)
	}
}

// TestCloudSQLServerCertIdentity: server certificates chain to ServerCAPEM and carry the
// identity asked for (CN PROJECT:INSTANCE by default, DNS SAN = dnsName on request).
func TestCloudSQLServerCertIdentity(t *testing.T) {
	e := start(t, emulator.Options{})
	e.AddCloudSQLInstance("my-proj", "cas", emulator.CloudSQLInstance{DNSName: "cas.x.sql.goog."})
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.ServerCAPEM("my-proj", "cas"))
	leafOf := func(c, k []byte, err error) *x509.Certificate {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		pair, err := tls.X509KeyPair(c, k)
		if err != nil {
			t.Fatal(err)
		}
		l, _ := x509.ParseCertificate(pair.Certificate[0])
		return l
	}
	l := leafOf(e.CloudSQLServerCert("my-proj", "cas", emulator.ServerCertOptions{DNSName: true, Hosts: []string{"127.0.0.1"}}))
	if _, err := l.Verify(x509.VerifyOptions{Roots: pool, DNSName: "cas.x.sql.goog"}); err != nil {
		t.Errorf("DNS SAN identity: %v", err)
	}
	if l.Subject.CommonName != "my-proj:cas" {
		t.Errorf("CN %q", l.Subject.CommonName)
	}
	l = leafOf(e.CloudSQLServerCert("my-proj", "cas", emulator.ServerCertOptions{CN: "my-proj:other"}))
	if l.Subject.CommonName != "my-proj:other" || len(l.DNSNames) != 0 {
		t.Errorf("wrong-identity certificate: CN %q SANs %v", l.Subject.CommonName, l.DNSNames)
	}
	if _, _, err := e.CloudSQLServerCert("my-proj", "orders-pg", emulator.ServerCertOptions{DNSName: true}); err == nil {
		t.Error("a DNS SAN for an instance without dnsName")
	}
}

// TestAlloyDBConnectionInfo: path, versions (no pscDnsName in v1), auth and 404 in
// AlloyDB's error style.
func TestAlloyDBConnectionInfo(t *testing.T) {
	e := startAlloy(t, emulator.Options{})
	if !e.AddAlloyDBInstance("my-proj", "us-central1", "analytics", "primary",
		emulator.AlloyDBInstance{PublicIPAddress: "127.0.0.2", PSCDNSName: "p.alloydb-psc.goog."}) {
		t.Fatal("cluster unknown")
	}
	if e.AddAlloyDBInstance("my-proj", "us-central1", "nope", "primary", emulator.AlloyDBInstance{}) {
		t.Error("instance added to an unknown cluster")
	}
	tok, _ := e.AccessToken()
	const path = "/projects/my-proj/locations/us-central1/clusters/analytics/instances/primary/connectionInfo"
	m := call(t, e, "GET", "v1beta"+path, tok, "").json(t)
	if m["ipAddress"] != "127.0.0.1" || m["publicIpAddress"] != "127.0.0.2" || m["pscDnsName"] != "p.alloydb-psc.goog." ||
		!strings.HasSuffix(m["name"].(string), path[1:]) || m["instanceUid"] == "" {
		t.Errorf("v1beta %v", m)
	}
	if m := call(t, e, "GET", "v1"+path, tok, "").json(t); m["pscDnsName"] != nil {
		t.Errorf("v1 has pscDnsName: %v", m)
	}
	call(t, e, "GET", "v1beta"+strings.Replace(path, "primary", "gone", 1), tok, "").alloyErr(t, http.StatusNotFound, "NOT_FOUND", "gone")
	call(t, e, "GET", "v1beta"+path, "", "").alloyErr(t, http.StatusUnauthorized, "UNAUTHENTICATED", "missing")
	if r := call(t, e, "POST", "v1beta"+path, tok, "{}"); r.status != http.StatusNotFound || strings.Contains(string(r.body), "{") {
		t.Errorf("POST connectionInfo: %d %s (want the HTML 404 page)", r.status, r.body)
	}
}

// TestMutateHugeEmptyFaults: Mutate rewrites a real answer; HugeBody and EmptyBody
// answer 200 with that body.
func TestMutateHugeEmptyFaults(t *testing.T) {
	e := start(t, emulator.Options{})
	tok, _ := e.AccessToken()
	const p = "sql/v1beta4/projects/my-proj/instances/orders-pg/connectSettings"
	e.Inject(emulator.Fault{Match: "connectSettings", Times: 1, Mutate: emulator.MutateJSON(func(m map[string]any) { m["region"] = "mars-1" })})
	if m := call(t, e, "GET", p, tok, "").json(t); m["region"] != "mars-1" || m["serverCaCert"] == nil {
		t.Errorf("mutated answer %v", m)
	}
	e.Inject(emulator.Fault{Match: "connectSettings", Times: 1, HugeBody: 3 << 20})
	if r := call(t, e, "GET", p, tok, ""); r.status != 200 || len(r.body) != 3<<20 {
		t.Errorf("huge: %d, %d bytes", r.status, len(r.body))
	}
	e.Inject(emulator.Fault{Match: "connectSettings", Times: 1, EmptyBody: true})
	if r := call(t, e, "GET", p, tok, ""); r.status != 200 || len(r.body) != 0 {
		t.Errorf("empty: %d, %q", r.status, r.body)
	}
}
