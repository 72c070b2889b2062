package metrics

import (
	"bytes"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"
)

func render(t testing.TB, r *Registry) string {
	t.Helper()
	var b bytes.Buffer
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestExposition(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(r *Registry)
		want  string
	}{
		{
			name:  "empty",
			setup: func(r *Registry) {},
			want:  "",
		},
		{
			name: "unlabeled families start at zero and sort by name",
			setup: func(r *Registry) {
				r.Gauge("b_up", "Whether it is up.")
				r.Counter("a_total", "Things done.").Add(2.5)
			},
			want: `# HELP a_total Things done.
# TYPE a_total counter
a_total 2.5
# HELP b_up Whether it is up.
# TYPE b_up gauge
b_up 0
`,
		},
		{
			name: "labels, sorting, escaping, deletion",
			setup: func(r *Registry) {
				c := r.Counter("dbcert_refresh_total", "Refreshes by result.\nSecond \\ line.", "instance", "result")
				c.Inc("orders", "ok")
				c.Inc("orders", "ok")
				c.Inc("billing", "ok")
				c.Add(3, "orders", "error")
				c.Inc(`we"ird\na`+"\nme", "ok")
				c.Inc("gone", "ok")
				c.Delete("gone", "ok")
				c.Add(-1, "orders", "ok")         // ignored
				c.Add(math.NaN(), "orders", "ok") // ignored
				g := r.Gauge("dbcert_cert_not_after_seconds", "", "instance")
				g.SetTime(time.Unix(1700000000, 0), "orders")
				g.SetTime(time.Unix(1700000000, 250_000_000), "billing")
				g.Set(1, "x")
				g.SetTime(time.Time{}, "x") // deletes
				g.SetTime(time.Time{}, "never-set")
				r.Gauge("dbcert_empty", "No samples.", "instance") // omitted
				v := r.Gauge("dbcert_values", "Odd values.", "k")
				v.Set(math.Inf(1), "inf")
				v.Set(math.Inf(-1), "ninf")
				v.Set(math.NaN(), "nan")
				v.Set(-0.5, "neg")
				v.Set(1e20, "big")
				v.Set(1.5e-7, "tiny")
				v.Add(2, "add")
				v.Add(-3, "add")
			},
			want: `# TYPE dbcert_cert_not_after_seconds gauge
dbcert_cert_not_after_seconds{instance="billing"} 1700000000.25
dbcert_cert_not_after_seconds{instance="orders"} 1700000000
# HELP dbcert_refresh_total Refreshes by result.\nSecond \\ line.
# TYPE dbcert_refresh_total counter
dbcert_refresh_total{instance="billing",result="ok"} 1
dbcert_refresh_total{instance="orders",result="error"} 3
dbcert_refresh_total{instance="orders",result="ok"} 2
dbcert_refresh_total{instance="we\"ird\\na\nme",result="ok"} 1
# HELP dbcert_values Odd values.
# TYPE dbcert_values gauge
dbcert_values{k="add"} -1
dbcert_values{k="big"} 1e+20
dbcert_values{k="inf"} +Inf
dbcert_values{k="nan"} NaN
dbcert_values{k="neg"} -0.5
dbcert_values{k="ninf"} -Inf
dbcert_values{k="tiny"} 1.5e-07
`,
		},
		{
			name: "DeleteMatching on a vec and on the registry",
			setup: func(r *Registry) {
				c := r.Counter("c_total", "C.", "instance", "result")
				g := r.Gauge("g", "G.", "instance")
				o := r.Gauge("other", "No instance label.", "kind")
				for _, in := range []string{"a", "b", "c"} {
					c.Inc(in, "ok")
					c.Inc(in, "err")
					g.Set(1, in)
				}
				o.Set(7, "b")
				c.DeleteMatching("instance", "a")
				c.DeleteMatching("nolabel", "b") // no-op
				g.DeleteMatching("instance", "c")
				r.DeleteMatching("instance", "b")
			},
			want: `# HELP c_total C.
# TYPE c_total counter
c_total{instance="c",result="err"} 1
c_total{instance="c",result="ok"} 1
# HELP g G.
# TYPE g gauge
g{instance="a"} 1
# HELP other No instance label.
# TYPE other gauge
other{kind="b"} 7
`,
		},
		{
			name: "re-registering returns the same family; deleted unlabeled sample is gone",
			setup: func(r *Registry) {
				r.Counter("x_total", "X.").Inc()
				r.Counter("x_total", "ignored").Inc()
				r.Gauge("y", "Y.").Delete()
			},
			want: `# HELP x_total X.
# TYPE x_total counter
x_total 2
`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := NewRegistry()
			tc.setup(r)
			if got := render(t, r); got != tc.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tc.want)
			}
			// A second pass (cached sort order) is identical.
			if got := render(t, r); got != tc.want {
				t.Errorf("second pass differs:\n%s", got)
			}
		})
	}
}

func TestValue(t *testing.T) {
	r := NewRegistry()
	c := r.Counter("c_total", "", "i")
	g := r.Gauge("g", "", "i")
	if _, ok := c.Value("a"); ok {
		t.Fatal("Value of a missing sample reported ok")
	}
	c.Add(2, "a")
	g.Set(5, "a")
	if v, ok := c.Value("a"); !ok || v != 2 {
		t.Fatalf("counter = %v, %v", v, ok)
	}
	if v, ok := g.Value("a"); !ok || v != 5 {
		t.Fatalf("gauge = %v, %v", v, ok)
	}
}

func TestNilIsNoop(t *testing.T) {
	var r *Registry
	c := r.Counter("a_total", "x", "i")
	g := r.Gauge("b", "x", "i")
	if c != nil || g != nil {
		t.Fatal("nil Registry returned non-nil vecs")
	}
	c.Inc("x")
	c.Add(1, "x")
	c.Delete("x")
	c.DeleteMatching("i", "x")
	g.Set(1, "x")
	g.Add(1, "x")
	g.SetTime(time.Now(), "x")
	g.Delete("x")
	g.DeleteMatching("i", "x")
	r.DeleteMatching("i", "x")
	if _, ok := g.Value("x"); ok {
		t.Fatal("nil vec has a value")
	}
	if got := render(t, r); got != "" {
		t.Fatalf("nil registry wrote %q", got)
	}
}

func mustPanic(t *testing.T, name string, f func()) {
	t.Helper()
	defer func() {
		if recover() == nil {
			t.Errorf("%s: no panic", name)
		}
	}()
	f()
}

func TestPanics(t *testing.T) {
	r := NewRegistry()
	c := r.Counter("c_total", "C.", "a", "b")
	mustPanic(t, "bad metric name", func() { r.Counter("1abc", "") })
	mustPanic(t, "bad metric name dash", func() { r.Counter("a-b", "") })
	mustPanic(t, "bad label name", func() { r.Gauge("g", "", "a:b") })
	mustPanic(t, "reserved label name", func() { r.Gauge("g", "", "__x") })
	mustPanic(t, "duplicate label", func() { r.Gauge("g", "", "a", "a") })
	mustPanic(t, "type conflict", func() { r.Gauge("c_total", "C.", "a", "b") })
	mustPanic(t, "label conflict", func() { r.Counter("c_total", "C.", "a") })
	mustPanic(t, "too few values", func() { c.Inc("x") })
	mustPanic(t, "too many values", func() { c.Inc("x", "y", "z") })
	mustPanic(t, "arity on ignored add", func() { c.Add(-1, "x") })
	mustPanic(t, "arity on delete", func() { c.Delete() })
}

func TestConcurrent(t *testing.T) {
	r := NewRegistry()
	c := r.Counter("c_total", "C.", "instance")
	g := r.Gauge("g", "G.", "instance")
	const workers, iters = 8, 2000
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < iters; i++ {
				in := fmt.Sprintf("i%d", i%10)
				c.Inc(in)
				g.Set(float64(i), in)
				if i%100 == 0 {
					g.Delete("tmp")
					g.Set(1, "tmp")
					r.Counter(fmt.Sprintf("dyn_%d_total", w), "D.").Inc()
				}
			}
		}()
	}
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				render(t, r)
			}
		}()
	}
	wg.Wait()
	var total float64
	for i := 0; i < 10; i++ {
		v, _ := c.Value(fmt.Sprintf("i%d", i))
		total += v
	}
	if total != workers*iters {
		t.Fatalf("total = %v, want %d", total, workers*iters)
	}
	out := render(t, r)
	if !strings.Contains(out, `c_total{instance="i0"} 1600`) {
		t.Fatalf("unexpected output:\n%s", out)
	}
}

func TestAllocs(t *testing.T) {
	r := NewRegistry()
	c := r.Counter("c_total", "C.", "instance", "result")
	g := r.Gauge("g", "G.", "instance")
	c.Inc("orders", "ok")
	g.Set(1, "orders")
	render(t, r)
	if n := testing.AllocsPerRun(100, func() {
		c.Inc("orders", "ok")
		g.Set(2, "orders")
	}); n != 0 {
		t.Errorf("updating existing series allocates %v times", n)
	}
}

func BenchmarkWriteText(b *testing.B) {
	r := NewRegistry()
	const instances, families = 1000, 10
	for f := 0; f < families; f++ {
		g := r.Gauge(fmt.Sprintf("dbcert_metric_%d", f), "A benchmark family.", "instance")
		for i := 0; i < instances; i++ {
			g.Set(float64(1700000000+i)+0.25, fmt.Sprintf("instance-%04d", i))
		}
	}
	var buf bytes.Buffer
	_ = r.WriteText(&buf)
	b.SetBytes(int64(buf.Len()))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		buf.Reset()
		if err := r.WriteText(&buf); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkInc(b *testing.B) {
	r := NewRegistry()
	c := r.Counter("c_total", "C.", "instance", "result")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c.Inc("orders", "ok")
		}
	})
}

func TestOnCollect(t *testing.T) {
	r := NewRegistry()
	g := r.Gauge("valid_now", "Valid at the scrape.", "instance")
	var calls int
	r.OnCollect(func() { calls++; g.Set(float64(calls), "a") })
	if got := render(t, r); !strings.Contains(got, `valid_now{instance="a"} 1`) {
		t.Errorf("first render:\n%s", got)
	}
	if got := render(t, r); !strings.Contains(got, `valid_now{instance="a"} 2`) {
		t.Errorf("the collect function did not run again before the second render:\n%s", got)
	}
	var nilReg *Registry
	nilReg.OnCollect(func() { t.Error("called on a nil registry") })
}
