package config

import (
	"fmt"
	"strings"
	"testing"
)

// bigConfig is a config of n Cloud SQL instances shaped like docs/bench's.
func bigConfig(n int) []byte {
	var b strings.Builder
	b.WriteString("agent {\n  share_keys = true\n}\n\ncredentials \"google\" \"bench\" {\n  credentials_file = \"sa.json\"\n}\n")
	for i := range n {
		fmt.Fprintf(&b, "\ninstance \"cloudsql\" \"db%04d\" {\n  project      = \"bench-proj\"\n  instance     = \"db%04d\"\n  credentials  = \"bench\"\n  api_endpoint = \"http://127.0.0.1:8080/\"\n  key_rotation = \"24h\"\n  sink \"file\" {\n    dir = \"out/db%04d\"\n  }\n}\n", i, i, i)
	}
	return []byte(b.String())
}

// BenchmarkParse1000 is the start-up cost of a daemon with 1,000 instances before its
// first API request: go test -bench Parse1000 -benchmem ./config
func BenchmarkParse1000(b *testing.B) {
	src := bigConfig(1000)
	b.SetBytes(int64(len(src)))
	for b.Loop() {
		if _, err := Parse("/etc/dbcert-agent/agent.hcl", src, testOptions()); err != nil {
			b.Fatal(err)
		}
	}
}

// TestParseInPieces: a large file parsed in pieces gives what the whole file gives, and
// a broken one reports exactly HCL's diagnostics for the whole file (with the block
// each is in), whether the break is one a piece notices or one only the whole shows.
func TestParseInPieces(t *testing.T) {
	big := string(bigConfig(40))
	cases := map[string]string{
		"valid":                     big,
		"no trailing newline":       strings.TrimSuffix(big, "\n"),
		"comments and heredocs":     strings.Replace(big, "instance \"cloudsql\" \"db0010\" {", "# a } comment\n/* } */\ninstance \"cloudsql\" \"db0010\" {\n  schedule = <<EOT\n@every 1h\n}\nEOT\n", 1),
		"bad value in the middle":   strings.Replace(big, "key_rotation = \"24h\"", "key_rotation = \"soon\"", 1),
		"unclosed block":            strings.Replace(big, "    dir = \"out/db0020\"\n  }\n}", "    dir = \"out/db0020\"\n  }\n", 1),
		"unterminated heredoc":      big + "instance \"cloudsql\" \"x\" {\n  project = <<EOT\n}\n",
		"duplicate name":            big + strings.Replace(big[strings.Index(big, "\ninstance \"cloudsql\" \"db0005\""):strings.Index(big, "\ninstance \"cloudsql\" \"db0006\"")], "db0005\" {", "db0005\" {", 1),
		"top-level attribute twice": "a = 1\n" + big + "a = 2\n",
	}
	for name, src := range cases {
		t.Run(name, func(t *testing.T) {
			samePieces(t, []byte(src), testOptions())
		})
	}
	// Pieces are what the big file is parsed in.
	ends, d := scanFile("p.hcl", []byte(big))
	if d != nil || len(ends) != 42 {
		t.Fatalf("scan: %d ends, %v", len(ends), d)
	}
	if _, _, cut := parseFile("p.hcl", []byte(big), ends, 1); !cut {
		t.Error("a valid file of 40 instances was not cut")
	}
}
