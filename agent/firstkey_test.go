package agent

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/dbcert-agent/dbcert-agent/config"
)

func TestFirstKey(t *testing.T) {
	t.Run("first caller gets it, later callers fresh keys", func(t *testing.T) {
		first, rest := &countingGen{}, &countingGen{}
		k := startFirstKey(first.gen)
		gen := k.wrap(rest.gen)
		const n = 20
		keys := make([]crypto.Signer, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				var err error
				if keys[i], err = gen(); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		<-k.done
		got := 0
		for _, key := range keys {
			if key == k.key {
				got++
			}
		}
		if got != 1 || first.n.Load() != 1 || rest.n.Load() != n-1 {
			t.Errorf("first key handed out %d times; generations: first %d, rest %d (want 1, 1, %d)", got, first.n.Load(), rest.n.Load(), n-1)
		}
	})
	t.Run("a failed first key falls back to a fresh one", func(t *testing.T) {
		rest := &countingGen{}
		k := startFirstKey(func() (crypto.Signer, error) { return nil, errors.New("no entropy") })
		if key, err := k.wrap(rest.gen)(); err != nil || key == nil || rest.n.Load() != 1 {
			t.Errorf("key %v, err %v, generations %d", key, err, rest.n.Load())
		}
	})
	t.Run("nil keeps the generator", func(t *testing.T) {
		rest := &countingGen{}
		var k *FirstKey
		if _, err := k.wrap(rest.gen)(); err != nil || rest.n.Load() != 1 {
			t.Errorf("err %v, generations %d", err, rest.n.Load())
		}
	})
}

// TestFirstKeyIsTheSharedKey: under share_keys, the daemon's first key is RunOptions'
// FirstKey, so 1,000 instances start without generating a key of their own (the
// daemon's own generator would make RSA keys, which the recorder would see).
func TestFirstKeyIsTheSharedKey(t *testing.T) {
	keys := map[string]crypto.Signer{}
	var mu sync.Mutex
	var ins []*Instance
	const n = 1000
	for i := range n {
		name := fmt.Sprintf("db%04d", i)
		ins = append(ins, &Instance{Name: name, NeedsKey: true, Renewal: config.Renewal{KeyMaxAge: time.Hour},
			Provider: &keyRecorder{mu: &mu, keys: keys, name: name}})
	}
	a := NewWithInstances(ins, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	first := &countingGen{}
	fk := startFirstKey(first.gen)
	d, err := newDaemon(a, RunOptions{ShareKeys: true, FirstKey: fk})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.run(ctx) }()
	eventually(t, 30*time.Second, "every instance fetched once", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(keys) == n
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for name, k := range keys {
		if k != fk.key {
			t.Fatalf("%s got another key than the first key", name)
		}
	}
	if first.n.Load() != 1 {
		t.Errorf("first key generations = %d", first.n.Load())
	}
}
