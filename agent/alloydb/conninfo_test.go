package alloydb

import (
	"strings"
	"testing"

	"github.com/dbcert-agent/dbcert-agent/agent/emulator"
)

// TestConnectionInfo: with an instance set, connectionInfo is fetched with the
// certificate and gives Host (public, private, psc); Engine is POSTGRES; an address the
// instance lacks is a permanent error naming the ip_type and what it has; v1 has no PSC.
func TestConnectionInfo(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	e.emu.AddAlloyDBInstance(project, location, cluster, "primary", emulator.AlloyDBInstance{IPAddress: "127.0.0.3",
		PublicIPAddress: "127.0.0.2", PSCDNSName: "7f3c.abcd.alloydb-psc.goog."})
	e.emu.AddAlloyDBInstance(project, location, cluster, "private-only", emulator.AlloyDBInstance{})
	tests := []struct {
		name, inst, ipType, version string
		need                        bool
		host                        string
		wantErr                     []string
	}{
		{name: "public", inst: "primary", need: true, host: "127.0.0.2"},
		{name: "private", inst: "primary", ipType: "private", need: true, host: "127.0.0.3"},
		{name: "psc", inst: "primary", ipType: "psc", need: true, host: "7f3c.abcd.alloydb-psc.goog"},
		{name: "psc v1", inst: "primary", ipType: "psc", version: V1, need: true, wantErr: []string{`ip_type "psc"`, "public 127.0.0.2", "private 127.0.0.3"}},
		{name: "no public", inst: "private-only", need: true, wantErr: []string{`ip_type "public"`, "private 127.0.0.1"}},
		{name: "no public, not needed", inst: "private-only"},
		{name: "unknown instance", inst: "nope", need: true, wantErr: []string{"404", "connection block's instance"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(e.apiRequests())
			b, err := fetch(t, e.provider(t, Options{Instance: tc.inst, IPType: tc.ipType, NeedHost: tc.need, APIVersion: tc.version}), keyOnce())
			reqs := e.apiRequests()[before:]
			if len(reqs) != 2 {
				t.Errorf("%d requests, want 2", len(reqs))
			}
			if tc.wantErr != nil {
				if err == nil {
					t.Fatalf("no error; host %q", b.Host)
				}
				if r, ok := err.(interface{ Retryable() bool }); !ok || r.Retryable() {
					t.Errorf("error %v is retryable, want permanent", err)
				}
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
			if b.Engine != Engine || b.Host != tc.host {
				t.Errorf("engine %q host %q, want %q %q", b.Engine, b.Host, Engine, tc.host)
			}
		})
	}
	// Without an instance: no connectionInfo request, Engine still known.
	before := len(e.apiRequests())
	b, err := fetch(t, e.provider(t, Options{}), keyOnce())
	if err != nil || b.Engine != Engine || b.Host != "" || len(e.apiRequests())-before != 1 {
		t.Errorf("without instance: err %v engine %q host %q requests %d", err, b.Engine, b.Host, len(e.apiRequests())-before)
	}
	if _, err := New(Options{Project: project, Location: location, Cluster: cluster, HTTPClient: e.client, NeedHost: true}); err == nil {
		t.Error("NeedHost without Instance accepted")
	}
}
