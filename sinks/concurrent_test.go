package sinks

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dbcert-agent/dbcert-agent/agent/bundle"
)

// readerStats counts what one reader goroutine saw.
type readerStats struct {
	reads      int // complete reads of cert, key and CA
	partial    int // a file that is not exactly one written PEM file: torn, partial, empty
	mismatches int // cert, key and CA not of one bundle
	retries    int // a file vanished (generation removed after it was resolved)
}

// TestConcurrentReadersSeeNoTornFiles rotates 1,000 distinct bundles while two readers
// run in tight loops. The generation-consistent reader (readlink ..data once, read all
// files from that generation) must never see a partial file or a mismatched set. The
// visible-names reader (cert, then key, like libpq) must never see a partial file; how
// often it straddles a swap (cert and key of different bundles) is logged.
func TestConcurrentReadersSeeNoTornFiles(t *testing.T) {
	const rotations = 1000
	cas := []*testCA{newCA(t, "CA one"), newCA(t, "CA two")}
	bundles := make([]*bundle.Bundle, 20)
	for i := range bundles {
		bundles[i] = cas[i%2].ecBundle(t) // consecutive bundles differ in key, leaf and CA
	}
	known := newKnownFiles(t, bundles)
	dir := sinkDir(t)
	f := newSink(t, opts(dir))
	mustWrite(t, f, bundles[0], true)

	var stop atomic.Bool
	var wg sync.WaitGroup
	var consistent, sequential readerStats
	wg.Go(func() {
		consistent = readLoop(&stop, known, func() (readResult, error) { return readGenerationOnce(dir) })
	})
	wg.Go(func() {
		sequential = readLoop(&stop, known, func() (readResult, error) { return readVisible(f.Paths()) })
	})

	start := time.Now()
	for i := 1; i <= rotations; i++ {
		changed, err := f.Write(t.Context(), bundles[i%len(bundles)])
		if err != nil || !changed {
			stop.Store(true)
			wg.Wait()
			t.Fatalf("rotation %d: changed=%v err=%v", i, changed, err)
		}
	}
	elapsed := time.Since(start)
	stop.Store(true)
	wg.Wait()

	t.Logf("rotations=%d consistent_reads=%d mismatches=%d partial=%d; sequential_reads=%d straddles=%d partial=%d (retries: consistent=%d sequential=%d; %v per rotation)",
		rotations, consistent.reads, consistent.mismatches, consistent.partial,
		sequential.reads, sequential.mismatches, sequential.partial,
		consistent.retries, sequential.retries, elapsed/rotations)
	if consistent.partial != 0 || consistent.mismatches != 0 {
		t.Errorf("generation-consistent reader saw %d partial files and %d mismatched sets, want 0",
			consistent.partial, consistent.mismatches)
	}
	if sequential.partial != 0 {
		t.Errorf("visible-names reader saw %d partial files, want 0", sequential.partial)
	}
	if consistent.reads == 0 || sequential.reads == 0 {
		t.Errorf("readers did not run: consistent=%d sequential=%d", consistent.reads, sequential.reads)
	}
	if gens := generations(t, dir); len(gens) != 2 {
		t.Errorf("after %d rotations: generations %v, want 2", rotations, gens)
	}
}

// knownFiles maps the exact bytes of every file the test writes to its bundle. A file
// whose bytes are not exactly one of these is torn or partial — a stricter test than
// "parses", and cheap enough for tight reader loops. Each entry was checked to parse.
type knownFiles struct {
	cert, key map[string]int // PEM -> bundle index
	ca        map[string]int // PEM -> CA index
	caOf      []int          // bundle index -> CA index
}

func newKnownFiles(t *testing.T, bundles []*bundle.Bundle) *knownFiles {
	t.Helper()
	k := &knownFiles{cert: map[string]int{}, key: map[string]int{}, ca: map[string]int{}}
	for i, b := range bundles {
		keyPEM, err := b.KeyPEM()
		must(t, err)
		if _, err := bundle.ParseKeyPEM(keyPEM, "key"); err != nil {
			t.Fatal(err)
		}
		if _, err := bundle.ParseCertsPEM(b.ChainPEM(), "cert"); err != nil {
			t.Fatal(err)
		}
		caPEM := string(b.CAPEM())
		if _, ok := k.ca[caPEM]; !ok {
			k.ca[caPEM] = len(k.ca)
		}
		k.cert[string(b.ChainPEM())] = i
		k.key[string(keyPEM)] = i
		k.caOf = append(k.caOf, k.ca[caPEM])
	}
	return k
}

// classify reports errPartial or errMismatch for a read, nil for a consistent set.
func (k *knownFiles) classify(r readResult) error {
	cert, okCert := k.cert[string(r.cert)]
	key, okKey := k.key[string(r.key)]
	ca, okCA := k.ca[string(r.ca)]
	switch {
	case !okCert || !okKey || !okCA:
		return errPartial
	case cert != key || k.caOf[cert] != ca:
		return errMismatch
	}
	return nil
}

var (
	errPartial  = errors.New("partial file")
	errMismatch = errors.New("mismatched set")
)

// readResult is what one read returned: raw PEM of cert, key and CA.
type readResult struct{ cert, key, ca []byte }

// readLoop reads until stop is set, classifying each read.
func readLoop(stop *atomic.Bool, known *knownFiles, read func() (readResult, error)) readerStats {
	var s readerStats
	for !stop.Load() {
		runtime.Gosched() // let the writer back on a CPU after each fsync; still a tight loop
		r, err := read()
		if errors.Is(err, fs.ErrNotExist) {
			s.retries++
			continue
		}
		if err != nil {
			s.partial++ // any other read failure counts against the writer
			continue
		}
		s.reads++
		switch known.classify(r) {
		case errPartial:
			s.partial++
		case errMismatch:
			s.mismatches++
		}
	}
	return s
}

// readGenerationOnce resolves ..data once and reads all three files from that
// generation directory.
func readGenerationOnce(dir string) (readResult, error) {
	gen, err := os.Readlink(filepath.Join(dir, dataLink))
	if err != nil {
		return readResult{}, err
	}
	g := filepath.Join(dir, gen)
	return readAll(filepath.Join(g, "cert.pem"), filepath.Join(g, "key.pem"), filepath.Join(g, "ca.pem"))
}

// readVisible opens the visible names one after another, as libpq does.
func readVisible(p Paths) (readResult, error) { return readAll(p.Cert, p.Key, p.CA) }

func readAll(cert, key, ca string) (r readResult, err error) {
	if r.cert, err = os.ReadFile(cert); err != nil {
		return r, err
	}
	if r.key, err = os.ReadFile(key); err != nil {
		return r, err
	}
	r.ca, err = os.ReadFile(ca)
	return r, err
}
