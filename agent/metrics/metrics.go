// Package metrics is a small, dependency-free metrics registry exposed in the
// Prometheus text format (version 0.0.4), plus the agent's operational HTTP
// endpoints (/metrics, /livez, /readyz).
//
// Only counters and gauges with string labels are supported. A nil *Registry,
// *CounterVec or *GaugeVec is a valid no-op, so code can record metrics
// unconditionally even when no listen address is configured.
package metrics

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type kind uint8

const (
	kindCounter kind = iota
	kindGauge
)

func (k kind) String() string {
	if k == kindCounter {
		return "counter"
	}
	return "gauge"
}

// Registry holds metric families; it is safe for concurrent use. WriteText
// renders them in the Prometheus text format 0.0.4: families sorted by name,
// each with "# HELP" and "# TYPE" lines, samples sorted by their label values
// (compared label by label, as strings), label values escaped (backslash,
// double quote, newline). A family with labels and no samples is omitted.
type Registry struct {
	mu       sync.RWMutex
	fams     []*family // sorted by name
	collects []func()  // run before every rendering
}

// OnCollect registers f to run before every rendering (WriteText, /metrics), for
// samples whose value depends on the moment they are read (such as "valid now"). f must
// be safe for concurrent use and cheap.
func (r *Registry) OnCollect(f func()) {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.collects = append(r.collects, f)
	r.mu.Unlock()
}

// NewRegistry returns an empty Registry.
func NewRegistry() *Registry { return &Registry{} }

// family is one metric name with its series.
type family struct {
	name       string
	help       string
	kind       kind
	labelNames []string
	header     []byte // "# HELP …\n# TYPE …\n"

	mu     sync.RWMutex
	series map[string]*series // key: label values joined by keySep
	sorted []*series          // exposition order; rebuilt when dirty
	dirty  bool
}

// series is one sample. Its value is a float64 stored as bits so updates need
// only the family's read lock.
type series struct {
	values []string
	prefix []byte // `name{l1="v1",l2="v2"} ` — precomputed for exposition
	bits   atomic.Uint64
}

// keySep separates label values in map keys; 0xff never occurs in UTF-8.
const keySep = '\xff'

// CounterVec is a counter family: values only go up. A nil *CounterVec is a no-op.
type CounterVec struct{ f *family }

// GaugeVec is a gauge family: values go up and down. A nil *GaugeVec is a no-op.
type GaugeVec struct{ f *family }

// Counter registers (or returns the already registered) counter family name
// with the given help text and label names. A family without labels has one
// sample that starts at 0. It panics on an invalid metric or label name, or
// when name is already registered with another type or other label names
// (programming errors). On a nil Registry it returns nil, a no-op.
func (r *Registry) Counter(name, help string, labelNames ...string) *CounterVec {
	if r == nil {
		return nil
	}
	return &CounterVec{r.register(name, help, kindCounter, labelNames)}
}

// Gauge registers (or returns the already registered) gauge family name; see
// Counter for the rules.
func (r *Registry) Gauge(name, help string, labelNames ...string) *GaugeVec {
	if r == nil {
		return nil
	}
	return &GaugeVec{r.register(name, help, kindGauge, labelNames)}
}

func (r *Registry) register(name, help string, k kind, labelNames []string) *family {
	if !validMetricName(name) {
		panic(fmt.Sprintf("metrics: invalid metric name %q", name))
	}
	for i, l := range labelNames {
		if !validLabelName(l) {
			panic(fmt.Sprintf("metrics: metric %s: invalid label name %q", name, l))
		}
		if slices.Contains(labelNames[:i], l) {
			panic(fmt.Sprintf("metrics: metric %s: duplicate label name %q", name, l))
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	i, found := slices.BinarySearchFunc(r.fams, name, func(f *family, n string) int { return strings.Compare(f.name, n) })
	if found {
		f := r.fams[i]
		if f.kind != k || !slices.Equal(f.labelNames, labelNames) {
			panic(fmt.Sprintf("metrics: metric %s already registered as %s%v, not %s%v", name, f.kind, f.labelNames, k, labelNames))
		}
		return f
	}
	f := &family{
		name:       name,
		help:       help,
		kind:       k,
		labelNames: slices.Clone(labelNames),
		series:     make(map[string]*series),
	}
	var h []byte
	if help != "" {
		h = append(h, "# HELP "...)
		h = append(h, name...)
		h = append(h, ' ')
		h = appendEscaped(h, help, false)
		h = append(h, '\n')
	}
	h = append(h, "# TYPE "...)
	h = append(h, name...)
	h = append(h, ' ')
	h = append(h, k.String()...)
	h = append(h, '\n')
	f.header = h
	if len(labelNames) == 0 {
		f.get(nil) // the single sample exists from the start, at 0
	}
	// Copy on write: readers iterate a snapshot of r.fams without the lock.
	fams := make([]*family, 0, len(r.fams)+1)
	fams = append(fams, r.fams[:i]...)
	fams = append(fams, f)
	r.fams = append(fams, r.fams[i:]...)
	return f
}

func validMetricName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '_' || c == ':' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || i > 0 && '0' <= c && c <= '9' {
			continue
		}
		return false
	}
	return true
}

func validLabelName(s string) bool {
	if s == "" || strings.HasPrefix(s, "__") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || i > 0 && '0' <= c && c <= '9' {
			continue
		}
		return false
	}
	return true
}

func (f *family) checkArity(values []string) {
	if len(values) != len(f.labelNames) {
		// Join, not values itself, so the variadic slice does not escape.
		panic(fmt.Sprintf("metrics: metric %s has %d labels %v, got %d values [%s]", f.name, len(f.labelNames), f.labelNames, len(values), strings.Join(values, " ")))
	}
}

// appendKey appends the map key of values to b.
func appendKey(b []byte, values []string) []byte {
	for i, v := range values {
		if i > 0 {
			b = append(b, keySep)
		}
		b = append(b, v...)
	}
	return b
}

// lookup returns the series for values, or nil. It does not allocate for
// keys up to the stack buffer size.
func (f *family) lookup(values []string) *series {
	var buf [128]byte
	k := appendKey(buf[:0], values)
	f.mu.RLock()
	s := f.series[string(k)]
	f.mu.RUnlock()
	return s
}

// get returns the series for values, creating it (at 0) if needed.
func (f *family) get(values []string) *series {
	f.checkArity(values)
	if s := f.lookup(values); s != nil {
		return s
	}
	key := string(appendKey(nil, values))
	f.mu.Lock()
	defer f.mu.Unlock()
	if s := f.series[key]; s != nil {
		return s
	}
	s := &series{values: slices.Clone(values)}
	p := append([]byte(nil), f.name...)
	if len(values) > 0 {
		p = append(p, '{')
		for i, v := range values {
			if i > 0 {
				p = append(p, ',')
			}
			p = append(p, f.labelNames[i]...)
			p = append(p, '=', '"')
			p = appendEscaped(p, v, true)
			p = append(p, '"')
		}
		p = append(p, '}')
	}
	s.prefix = append(p, ' ')
	f.series[key] = s
	f.dirty = true
	return s
}

func (f *family) delete(values []string) {
	f.checkArity(values)
	var buf [128]byte
	k := appendKey(buf[:0], values)
	f.mu.Lock()
	if _, ok := f.series[string(k)]; ok {
		delete(f.series, string(k))
		f.dirty = true
	}
	f.mu.Unlock()
}

func (f *family) deleteMatching(label, value string) {
	i := slices.Index(f.labelNames, label)
	if i < 0 {
		return
	}
	f.mu.Lock()
	for k, s := range f.series {
		if s.values[i] == value {
			delete(f.series, k)
			f.dirty = true
		}
	}
	f.mu.Unlock()
}

func (f *family) value(values []string) (float64, bool) {
	f.checkArity(values)
	s := f.lookup(values)
	if s == nil {
		return 0, false
	}
	return math.Float64frombits(s.bits.Load()), true
}

func (s *series) add(v float64) {
	for {
		old := s.bits.Load()
		n := math.Float64bits(math.Float64frombits(old) + v)
		if s.bits.CompareAndSwap(old, n) {
			return
		}
	}
}

// Add adds v to the sample with the given label values (one per label name, in
// order), creating it at 0 first. Negative and NaN v are ignored: counters
// never go down. It panics when the number of label values is wrong.
func (c *CounterVec) Add(v float64, labelValues ...string) {
	if c == nil {
		return
	}
	if !(v >= 0) { // also catches NaN
		c.f.checkArity(labelValues)
		return
	}
	c.f.get(labelValues).add(v)
}

// Inc adds 1; see Add.
func (c *CounterVec) Inc(labelValues ...string) { c.Add(1, labelValues...) }

// Value returns the current value of a sample and whether it exists.
func (c *CounterVec) Value(labelValues ...string) (float64, bool) {
	if c == nil {
		return 0, false
	}
	return c.f.value(labelValues)
}

// Delete removes the sample with the given label values, if any. An update
// racing with Delete on the same sample may be lost with it.
func (c *CounterVec) Delete(labelValues ...string) {
	if c != nil {
		c.f.delete(labelValues)
	}
}

// DeleteMatching removes every sample whose label named label equals value,
// e.g. DeleteMatching("instance", "orders") when an instance leaves the
// config. An unknown label name removes nothing.
func (c *CounterVec) DeleteMatching(label, value string) {
	if c != nil {
		c.f.deleteMatching(label, value)
	}
}

// Set sets the sample with the given label values (one per label name, in
// order), creating it if needed. It panics when the number of label values is
// wrong.
func (g *GaugeVec) Set(v float64, labelValues ...string) {
	if g == nil {
		return
	}
	g.f.get(labelValues).bits.Store(math.Float64bits(v))
}

// Add adds v (which may be negative) to the sample, creating it at 0 first.
func (g *GaugeVec) Add(v float64, labelValues ...string) {
	if g == nil {
		return
	}
	g.f.get(labelValues).add(v)
}

// SetTime sets the sample to t as Unix seconds (a float with sub-second
// precision). A zero t deletes the sample instead, so "no such time yet"
// shows up as an absent series rather than 1970.
func (g *GaugeVec) SetTime(t time.Time, labelValues ...string) {
	if g == nil {
		return
	}
	if t.IsZero() {
		g.f.delete(labelValues)
		return
	}
	g.Set(float64(t.Unix())+float64(t.Nanosecond())/1e9, labelValues...)
}

// Value returns the current value of a sample and whether it exists.
func (g *GaugeVec) Value(labelValues ...string) (float64, bool) {
	if g == nil {
		return 0, false
	}
	return g.f.value(labelValues)
}

// Delete removes the sample with the given label values, if any.
func (g *GaugeVec) Delete(labelValues ...string) {
	if g != nil {
		g.f.delete(labelValues)
	}
}

// DeleteMatching removes every sample whose label named label equals value;
// see CounterVec.DeleteMatching.
func (g *GaugeVec) DeleteMatching(label, value string) {
	if g != nil {
		g.f.deleteMatching(label, value)
	}
}

// DeleteMatching removes, from every family of r that has a label named
// label, each sample whose value for it is value — e.g.
// r.DeleteMatching("instance", "orders") drops all series of a removed
// instance at once.
func (r *Registry) DeleteMatching(label, value string) {
	if r == nil {
		return
	}
	for _, f := range r.families() {
		f.deleteMatching(label, value)
	}
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

// WriteText writes every family in the Prometheus text format 0.0.4 with a
// single Write call, and returns that call's error. A nil Registry writes
// nothing.
func (r *Registry) WriteText(w io.Writer) error {
	if r == nil {
		return nil
	}
	bp := bufPool.Get().(*[]byte)
	b := r.appendText((*bp)[:0])
	_, err := w.Write(b)
	if cap(b) <= 8<<20 { // don't keep huge buffers around
		*bp = b[:0]
		bufPool.Put(bp)
	}
	return err
}

// appendText appends the exposition of r to b.
func (r *Registry) appendText(b []byte) []byte {
	r.mu.RLock()
	collects := r.collects
	r.mu.RUnlock()
	for _, f := range collects {
		f()
	}
	for _, f := range r.families() {
		b = f.appendText(b)
	}
	return b
}

// families returns the current, immutable snapshot of r's families.
func (r *Registry) families() []*family {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.fams
}

func (f *family) appendText(b []byte) []byte {
	f.mu.RLock()
	if !f.dirty {
		b = f.appendSamples(b)
		f.mu.RUnlock()
		return b
	}
	f.mu.RUnlock()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.dirty {
		f.sorted = f.sorted[:0]
		for _, s := range f.series {
			f.sorted = append(f.sorted, s)
		}
		slices.SortFunc(f.sorted, func(a, b *series) int { return slices.Compare(a.values, b.values) })
		clear(f.sorted[len(f.sorted):cap(f.sorted)]) // drop references to deleted series
		f.dirty = false
	}
	return f.appendSamples(b)
}

// appendSamples appends the header and samples; f.mu must be held.
func (f *family) appendSamples(b []byte) []byte {
	if len(f.sorted) == 0 {
		return b
	}
	b = append(b, f.header...)
	for _, s := range f.sorted {
		b = append(b, s.prefix...)
		b = appendValue(b, math.Float64frombits(s.bits.Load()))
		b = append(b, '\n')
	}
	return b
}

// appendValue formats v as the text format expects: integers without a
// decimal point, other values in the shortest form that round-trips, and
// +Inf, -Inf, NaN spelt out.
func appendValue(b []byte, v float64) []byte {
	switch {
	case math.IsNaN(v):
		return append(b, "NaN"...)
	case math.IsInf(v, 1):
		return append(b, "+Inf"...)
	case math.IsInf(v, -1):
		return append(b, "-Inf"...)
	case v == math.Trunc(v) && math.Abs(v) < 1e15:
		return strconv.AppendInt(b, int64(v), 10)
	case math.Abs(v) >= 1e-4 && math.Abs(v) < 1e15:
		return strconv.AppendFloat(b, v, 'f', -1, 64)
	default:
		return strconv.AppendFloat(b, v, 'g', -1, 64)
	}
}

// appendEscaped appends s with backslash and newline escaped, and, in label
// values (quote), the double quote too.
func appendEscaped(b []byte, s string, quote bool) []byte {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\':
			b = append(b, '\\', '\\')
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '"' && quote:
			b = append(b, '\\', '"')
		default:
			b = append(b, c)
		}
	}
	return b
}
