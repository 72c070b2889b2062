package verify

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dbcert-agent/dbcert-agent/agent/mysqltest"
)

// TestMySQL runs Check against a real MariaDB server whose user requires a verified
// client certificate (REQUIRE X509).
func TestMySQL(t *testing.T) {
	serverCA, clientCA, otherCA := newTestCA(t, "server CA"), newTestCA(t, "client CA"), newTestCA(t, "other CA")
	srvCert, srvKey := serverCA.issue(t, "proj:shop", true)
	srv := mysqltest.Start(t, mysqltest.Options{ServerCertPEM: srvCert, ServerKeyPEM: srvKey, ClientCAPEM: clientCA.pem()})
	addr := net.JoinHostPort(srv.Host(), strconv.Itoa(srv.Port()))
	goodCert, goodKey := clientCA.issue(t, "app", false)
	badCert, badKey := otherCA.issue(t, "app", false)

	tests := []struct {
		name           string
		cert, key, ca  []byte
		ok, chain, acc bool
		errIs          error
		lineContains   string
	}{
		{name: "accepted", cert: goodCert, key: goodKey, ca: serverCA.pem(), ok: true, chain: true, acc: true, lineContains: "client-cert=accepted"},
		{name: "server from another CA", cert: goodCert, key: goodKey, ca: otherCA.pem(), acc: true, lineContains: "does not verify against the CA file"},
		{name: "client certificate rejected", cert: badCert, key: badKey, ca: serverCA.pem(), chain: true, errIs: ErrRejected, lineContains: "rejected the client certificate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tg := clientFiles(t, tc.cert, tc.key, tc.ca)
			tg.Instance, tg.Engine, tg.Addr, tg.User, tg.Database = "shop", EngineMySQL, addr, srv.User(), srv.Database()
			tg.Identity = Identity{CN: "proj:shop"}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			r := Check(ctx, tg)
			var b strings.Builder
			WriteLine(&b, r)
			line := b.String()
			t.Log(line)
			if r.OK() != tc.ok || r.ChainOK != tc.chain || r.Accepted != tc.acc || !r.IdentityOK {
				t.Errorf("ok=%v chain=%v accepted=%v identity=%v, want %v %v %v true (err %v)", r.OK(), r.ChainOK, r.Accepted, r.IdentityOK, tc.ok, tc.chain, tc.acc, r.Err)
			}
			if tc.errIs != nil && !errors.Is(r.Err, tc.errIs) {
				t.Errorf("err = %v, want %v", r.Err, tc.errIs)
			}
			if !strings.Contains(line, tc.lineContains) {
				t.Errorf("line %q does not contain %q", line, tc.lineContains)
			}
		})
	}
}
