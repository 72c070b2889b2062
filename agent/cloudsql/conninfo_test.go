package cloudsql

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/dbcert-agent/dbcert-agent/agent/emulator"
)

// TestConnectionInfo: engine, address and DNS name come from connectSettings (no extra
// request); an address the instance lacks is a permanent error naming the ip_type and
// what the instance has.
func TestConnectionInfo(t *testing.T) {
	e := newEnv(t)
	e.emu.AddCloudSQLInstance(project, "full", emulator.CloudSQLInstance{
		DatabaseVersion: "MYSQL_8_0",
		IPAddresses: []emulator.IPMapping{{Type: "OUTGOING", IPAddress: "34.9.9.9"}, {Type: "PRIMARY", IPAddress: "127.0.0.2"},
			{Type: "PRIVATE", IPAddress: "127.0.0.3"}},
		DNSName: "abcd.x.us-central1.sql.goog.", PSCEnabled: true,
	})
	e.emu.AddCloudSQLInstance(project, "public-only", emulator.CloudSQLInstance{DNSName: "cas.example."})
	e.emu.AddCloudSQLInstance(project, "mssql", emulator.CloudSQLInstance{DatabaseVersion: "SQLSERVER_2019_STANDARD",
		IPAddresses: []emulator.IPMapping{}})
	tests := []struct {
		inst, ipType      string
		need              bool
		engine, host, dns string
		wantErr           []string
	}{
		{inst: "full", ipType: "", engine: "MYSQL_8_0", host: "127.0.0.2", dns: "abcd.x.us-central1.sql.goog."},
		{inst: "full", ipType: "public", need: true, engine: "MYSQL_8_0", host: "127.0.0.2", dns: "abcd.x.us-central1.sql.goog."},
		{inst: "full", ipType: "private", need: true, engine: "MYSQL_8_0", host: "127.0.0.3", dns: "abcd.x.us-central1.sql.goog."},
		{inst: "full", ipType: "psc", need: true, engine: "MYSQL_8_0", host: "abcd.x.us-central1.sql.goog", dns: "abcd.x.us-central1.sql.goog."},
		{inst: "public-only", ipType: "private", need: false, engine: "POSTGRES_15", host: "", dns: "cas.example."},
		{inst: "public-only", ipType: "private", need: true, wantErr: []string{`ip_type "private"`, "public 127.0.0.1"}},
		// dnsName without pscEnabled is a CAS server name, not a PSC address.
		{inst: "public-only", ipType: "psc", need: true, wantErr: []string{`ip_type "psc"`, "public 127.0.0.1"}},
		// No connection files for SQL Server, so no address is needed.
		{inst: "mssql", ipType: "public", need: true, engine: "SQLSERVER_2019_STANDARD"},
	}
	for _, tc := range tests {
		t.Run(tc.inst+"/"+tc.ipType, func(t *testing.T) {
			before := len(e.apiRequests())
			b, err := fetch(t, e.provider(t, Options{Instance: tc.inst, IPType: tc.ipType, NeedHost: tc.need}), keyOnce())
			if n := len(e.apiRequests()) - before; n != 2 {
				t.Errorf("%d API requests, want 2 (no extra request for the address)", n)
			}
			if tc.wantErr != nil {
				if err == nil {
					t.Fatalf("no error; host %q", b.Host)
				}
				checkErr(t, err, false, 0, "connectSettings")
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not contain %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if b.Engine != tc.engine || b.Host != tc.host || b.DNSName != tc.dns {
				t.Errorf("engine %q host %q dns %q, want %q %q %q", b.Engine, b.Host, b.DNSName, tc.engine, tc.host, tc.dns)
			}
		})
	}
}

// TestSQLServerWarnsOnce: a SQL Server instance with a connection block logs one warning
// that no connection files are written, however often it is fetched.
func TestSQLServerWarnsOnce(t *testing.T) {
	e := newEnv(t)
	e.emu.AddCloudSQLInstance(project, "mssql", emulator.CloudSQLInstance{DatabaseVersion: "SQLSERVER_2022_STANDARD"})
	var buf bytes.Buffer
	p := e.provider(t, Options{Instance: "mssql", Connection: true, NeedHost: true, Logger: slog.New(slog.NewTextHandler(&buf, nil))})
	for range 3 {
		if _, err := fetch(t, p, keyOnce()); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(buf.String(), "no connection files"); n != 1 {
		t.Errorf("warned %d times, want once:\n%s", n, buf.String())
	}
	buf.Reset()
	if _, err := fetch(t, e.provider(t, Options{Instance: "mssql", Logger: slog.New(slog.NewTextHandler(&buf, nil))}), keyOnce()); err != nil || buf.Len() != 0 {
		t.Errorf("without a connection block: err %v, log %q", err, buf.String())
	}
}
