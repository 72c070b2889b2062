package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"time"
)

// mutationSeeds are the configurations mutated by TestMutatedConfigsNeverCrash: the
// example, every fixture, and a few valid files exercising every block.
func mutationSeeds(t testing.TB) [][]byte {
	t.Helper()
	files, err := filepath.Glob("testdata/invalid/*.hcl")
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	var seeds [][]byte
	for _, f := range append(files, "../agent.hcl.example") {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds, b)
	}
	return append(seeds, []byte(richConfig))
}

// richConfig uses every block and most attributes, heredocs, templates and functions.
const richConfig = `agent {
  log_level  = "debug"
  log_format = "json"
  listen     = "127.0.0.1:9464"
  api_rate   = "180/m"
  share_keys = true
}
credentials "google" "default" { credentials_file = "sa.json" }
credentials "huaweicloud" "hw" {
  region   = "cn-north-4"
  user_name = "ops"
  password = env("KEYSTORE_PASS")
  domain_name = "acct"
}
instance "cloudsql" "orders" {
  project  = "p-${env("DBCERT_TEST_PROJECT")}"
  instance = "orders-pg"
  ip_type  = "private"
  schedule = "CRON_TZ=Europe/Berlin 0 3 * * *"
  connection {
    user    = "app"
    dbname  = "app"
    ip_type = "private"
    port    = 5432
  }
  sink "file" {
    dir    = "/var/lib/dbcert-agent/orders"
    layout = "libpq"
    owner  = "app"
    mode   = "0640"
    pkcs12 { password = env("KEYSTORE_PASS") }
  }
  hook "exec" {
    command = ["/bin/true", <<-EOT
      %{ for x in ["a", "b"] }${x}%{ endfor }
    EOT
    ]
    env = { APP_MODE = "reload", N = 3 }
  }
  hook "signal" {
    pid_file = "/run/app.pid"
    signal   = "USR1"
  }
}
instance "alloydb" "analytics" {
  project = "p"
  location = "us-central1"
  cluster = "c"
  connection {
    instance = "primary"
  }
  sink "file" { dir = "/var/lib/dbcert-agent/analytics" }
}
instance "geminidb" "cache" {
  project_id  = "0123456789abcdef0123456789abcdef"
  instance_id = "i"
  credentials = "hw"
  sink "file" { dir = "/etc/ssl/cache" }
}
`

// mutate returns a damaged copy of src: truncated, duplicated, with brackets, quotes,
// heredoc starts or random bytes inserted, deeply nested, or several of these.
func mutate(r *rand.Rand, src []byte) []byte {
	b := bytes.Clone(src)
	openers := []string{"(", "[", "{", "${", "%{", "\"", "%{ if true }", "%{ for x in y }", "!", "-", "<<EOT\n", "/*", "#", "}", ")", "]", "\\", "$${", "\n"}
	pos := func() int { return r.IntN(len(b) + 1) }
	// big scales the large mutations; under the race detector they stay smaller (still
	// well past MaxNesting).
	big := func(n int) int {
		if raceDetector {
			n /= 8
		}
		return r.IntN(max(n, 1))
	}
	insert := func(at int, s []byte) { b = append(b[:at], append(s, b[at:]...)...) }
	for n := 1 + r.IntN(3); n > 0; n-- {
		switch r.IntN(9) {
		case 0: // truncate
			b = b[:pos()]
		case 1: // duplicate a slice
			i := pos()
			j := i + r.IntN(len(b)-i+1)
			insert(pos(), bytes.Clone(b[i:j]))
		case 2: // a few bracket-like tokens
			for k := r.IntN(8); k >= 0; k-- {
				insert(pos(), []byte(openers[r.IntN(len(openers))]))
			}
		case 3: // random bytes
			for k := r.IntN(16); k >= 0; k-- {
				if len(b) > 0 {
					b[r.IntN(len(b))] = byte(r.IntN(256))
				}
			}
		case 4: // deep nesting of one kind
			o := openers[r.IntN(9)]
			insert(pos(), []byte(strings.Repeat(o, 50+big(5000))))
		case 5: // deep nesting of mixed kinds
			var s strings.Builder
			for k := 50 + big(2000); k > 0; k-- {
				s.WriteString(openers[r.IntN(len(openers))])
			}
			insert(pos(), []byte(s.String()))
		case 6: // delete a slice
			i := pos()
			j := i + r.IntN(min(len(b)-i, 200)+1)
			b = append(b[:i], b[j:]...)
		case 7: // a long line of one character
			insert(pos(), bytes.Repeat([]byte{byte(r.IntN(128))}, 1000+big(6000)))
		case 8: // many copies of the whole file
			b = bytes.Repeat(b, 2+big(4))
		}
	}
	return b
}

// TestMutatedConfigsNeverCrash loads 1,600 damaged configurations: each must load or
// fail with diagnostics within the deadline, never panic or overflow the stack (either
// would end this test binary), and render a bounded report.
func TestMutatedConfigsNeverCrash(t *testing.T) {
	const cases = 1600
	const deadline = 20 * time.Second // a hang detector, not a speed test
	seeds := mutationSeeds(t)
	r := rand.New(rand.NewPCG(1, 2))
	opts := testOptions()
	for i := range cases {
		src := mutate(r, seeds[r.IntN(len(seeds))])
		type result struct {
			err   error
			panic any
			stack []byte
		}
		done := make(chan result, 1)
		go func() {
			defer func() {
				if p := recover(); p != nil {
					done <- result{panic: p, stack: debug.Stack()}
				}
			}()
			_, err := Parse(fmt.Sprintf("m%d.hcl", i), src, opts)
			var de *DiagError
			if errors.As(err, &de) {
				var buf bytes.Buffer
				if rerr := de.Render(&buf, 100); rerr != nil {
					err = rerr
				} else if buf.Len() > 64<<10 {
					err = fmt.Errorf("rendered diagnostics are %d bytes", buf.Len())
				} else if !strings.Contains(buf.String(), ": error: ") && !strings.Contains(buf.String(), "Error: ") {
					err = fmt.Errorf("rendered diagnostics name no error:\n%s", buf.String())
				} else {
					err = nil
				}
			}
			done <- result{err: err}
		}()
		start := time.Now()
		select {
		case res := <-done:
			if d := time.Since(start); d > 200*time.Millisecond && os.Getenv("DBCERT_MUTATE_SLOW") != "" {
				t.Logf("case %d: %d bytes, %v", i, len(src), d)
				saveCrasher(t, i, src)
			}
			if res.panic != nil || res.err != nil {
				saveCrasher(t, i, src)
				t.Fatalf("case %d: panic %v, err %v\n%s", i, res.panic, res.err, res.stack)
			}
		case <-time.After(deadline):
			saveCrasher(t, i, src)
			t.Fatalf("case %d: still loading after %v", i, deadline)
		}
	}
}

// saveCrasher keeps a failing input for reproduction.
func saveCrasher(t *testing.T, i int, src []byte) {
	p := filepath.Join(os.TempDir(), fmt.Sprintf("dbcert-config-crasher-%d.hcl", i))
	if err := os.WriteFile(p, src, 0o644); err == nil {
		t.Logf("input saved to %s", p)
	}
}

var _ = io.Discard
