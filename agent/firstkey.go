package agent

import (
	"crypto"
	"sync"
)

// FirstKey is one RSA-2048 key made in the background from the moment it is started, for
// Run's first key: a daemon's first API request waits for a key (tens of milliseconds),
// and making it while the configuration is still being parsed takes that off the
// start-up path. The first key the daemon asks for is this one (waiting for it if it is
// not ready yet; see wrap); later ones are made as usual. A FirstKey that is never taken is simply dropped
// (a configuration without client certificates wastes one key generation at start).
// Safe for concurrent use.
type FirstKey struct {
	once sync.Once
	done chan struct{}
	key  crypto.Signer
	err  error
}

// StartFirstKey starts making the key now.
func StartFirstKey() *FirstKey { return startFirstKey(newRSAKey) }

func startFirstKey(gen func() (crypto.Signer, error)) *FirstKey {
	k := &FirstKey{done: make(chan struct{})}
	go func() {
		defer close(k.done)
		k.key, k.err = gen()
	}()
	return k
}

// wrap returns gen that hands out the first key before any key of gen's own. A nil k
// returns gen unchanged.
func (k *FirstKey) wrap(gen func() (crypto.Signer, error)) func() (crypto.Signer, error) {
	if k == nil {
		return gen
	}
	return func() (crypto.Signer, error) {
		first := false
		k.once.Do(func() { first = true })
		if !first {
			return gen()
		}
		<-k.done
		if k.err != nil {
			return gen()
		}
		return k.key, nil
	}
}
