package agent

import (
	"fmt"
	"testing"
	"time"
)

func TestStatusLineNamesAtMostTen(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name            string
		waiting, failed int
		want            string
	}{
		{"none", 0, 0, "2 of 2 instance(s) with valid files"},
		{"a few", 3, 1, "2 of 6 instance(s) with valid files; failed permanently (see the log): f000; waiting for files: w000, w001, w002"},
		{"exactly ten", 10, 0, "2 of 12 instance(s) with valid files; waiting for files: w000, w001, w002, w003, w004, w005, w006, w007, w008, w009"},
		{"a thousand", 1000, 12, "2 of 1014 instance(s) with valid files; failed permanently (see the log): f000, f001, f002, f003, f004, f005, f006, f007, f008, f009 and 2 more; waiting for files: w000, w001, w002, w003, w004, w005, w006, w007, w008, w009 and 990 more"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newReadiness()
			// Added in reverse order: the map's order must not matter either.
			for i := tt.waiting - 1; i >= 0; i-- {
				r.add(fmt.Sprintf("w%03d", i))
			}
			for i := tt.failed - 1; i >= 0; i-- {
				n := fmt.Sprintf("f%03d", i)
				r.add(n)
				r.set(n, nil, "403 Forbidden")
			}
			for _, n := range []string{"ok1", "ok2"} {
				r.add(n)
				r.inst[n].files = true
			}
			if got := r.statusLine(now); got != tt.want {
				t.Errorf("statusLine =\n  %q\nwant\n  %q", got, tt.want)
			}
		})
	}
}
