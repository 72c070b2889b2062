package agent

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"time"

	"github.com/dbcert-agent/dbcert-agent/agent/bundle"
	"github.com/dbcert-agent/dbcert-agent/agent/hook"
)

// Hook event kinds (DBCERT_EVENT).
const (
	EventRenewed   = "renewed"
	EventCAChanged = "ca-changed"
)

// errNotStored says no sink holds files yet.
var errNotStored = fmt.Errorf("no files written yet: %w", fs.ErrNotExist)

// current reads the instance's files back from every sink. It succeeds only when every
// sink holds complete files that match each other and are valid at now.
func (a *Agent) current(in *Instance, now time.Time) (*bundle.Bundle, error) {
	var first *bundle.Bundle
	for i, s := range in.Sinks {
		b, err := s.Current()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil, errNotStored
			}
			return nil, err
		}
		if i == 0 {
			first = b
			continue
		}
		// Sinks hold the same material; only some store the login token (token/.pgpass).
		if !sameMaterial(first, b) {
			return nil, fmt.Errorf("sink %d holds different files than sink 1", i+1)
		}
		if first.LoginToken == "" && b.LoginToken != "" {
			first.LoginToken = b.LoginToken
		}
	}
	if first == nil {
		return nil, errNotStored
	}
	if in.NeedsKey && !first.HasClientCert() {
		return nil, fmt.Errorf("%w: no client certificate on disk", bundle.ErrInvalid)
	}
	if err := first.Verify(now); err != nil {
		return nil, err
	}
	if !first.TokenExpiry.IsZero() && !now.Before(first.TokenExpiry) {
		return nil, fmt.Errorf("%w: the login token stored with the files expired at %s", bundle.ErrInvalid, fmtTime(first.TokenExpiry))
	}
	return first, nil
}

// renewAt is when the files b should be renewed, without jitter (jitter is for the
// daemon's timers; `once` and status use the nominal time).
func (in *Instance) renewAt(b *bundle.Bundle, jitter float64) time.Time {
	if !b.HasClientCert() {
		return time.Time{} // CA-only material has no lifetime of ours; schedules drive it
	}
	return RenewAt(b.Start(), b.NotAfter(), in.Renewal, jitter)
}

// nextDownload is when a CA-only instance whose files b are on disk downloads again: its
// schedule's next time after the last download (b.Issued, stored with the files, so a
// restart does not start the count over), or now when that is unknown or already past.
// Zero without a schedule.
func (in *Instance) nextDownload(b *bundle.Bundle, now time.Time) time.Time {
	if in.Spec == nil || in.Spec.Schedule == nil {
		return time.Time{}
	}
	if b.Issued.IsZero() {
		return now
	}
	next := in.Spec.Schedule.Next(b.Issued)
	if next.Before(now) {
		return now
	}
	return next
}

// minLastAttempt is the least time a retry must have before the deadline of a fetch
// (once's -timeout) for it to be worth making.
const minLastAttempt = time.Second

// fetch asks the provider for fresh, verified material, retrying what a retry can help
// until ctx is done. prev is what is on disk (nil when nothing valid is), used to cap
// the backoff at a quarter of its time left.
func (a *Agent) fetch(ctx context.Context, in *Instance, prev *bundle.Bundle, log *slog.Logger) (*bundle.Bundle, error) {
	if in.Err != nil {
		return nil, in.Err
	}
	if err := preflight(in); err != nil {
		return nil, err
	}
	// One key for the whole refresh: retries of the same request use the same key (and
	// so AlloyDB reuses its requestId and the server can deduplicate).
	var key crypto.Signer
	if in.NeedsKey {
		k, err := bundle.NewKey()
		if err != nil {
			return nil, fmt.Errorf("generating a private key: %w", err)
		}
		key = k
	}
	for attempt := 0; ; attempt++ {
		b, err := a.fetchWith(ctx, in, key)
		if err == nil {
			return b, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("gave up: %w (%v)", err, context.Cause(ctx))
		}
		ok, after := retryable(err)
		if !ok {
			return nil, err
		}
		var left time.Duration
		if prev != nil {
			left = prev.NotAfter().Sub(a.now())
		}
		wait := Backoff(attempt, a.rand(), left, after)
		if dl, has := ctx.Deadline(); has {
			remaining := dl.Sub(a.now())
			if wait >= remaining {
				// The backoff would pass the time allowed: try once more halfway
				// through what is left (not sooner than the server asked), so the
				// whole -timeout is used.
				wait = max(after, remaining/2)
			}
			if remaining-wait < minLastAttempt { // too little left for an attempt
				return nil, fmt.Errorf("gave up (the time allowed runs out before the next retry): %w", err)
			}
		}
		log.Warn("refresh failed; will retry", "err", err, "retry_in", wait.Round(time.Millisecond), "attempt", attempt+1)
		if serr := a.sleep(ctx, wait); serr != nil {
			return nil, fmt.Errorf("gave up: %w", err)
		}
	}
}

// preflighter is a Sink that can tell, before anything is fetched, that a write would be
// refused (a file the agent did not create sits at one of its names).
type preflighter interface {
	Preflight(clientCert bool) error
}

// preflight asks every sink that can whether a write would be refused, so a refusal that
// only the operator can mend costs no API call (and no certificate). Its error is
// permanent: retrying cannot help until someone removes the file.
func preflight(in *Instance) error {
	for _, s := range in.Sinks {
		if p, ok := s.(preflighter); ok {
			if err := p.Preflight(in.NeedsKey); err != nil {
				return fmt.Errorf("writing files is not possible, so nothing was fetched: %w", err)
			}
		}
	}
	return nil
}

// fetchWith makes one Fetch with the given key and verifies the result.
func (a *Agent) fetchWith(ctx context.Context, in *Instance, key crypto.Signer) (*bundle.Bundle, error) {
	b, err := in.Provider.Fetch(ctx, key)
	if err != nil {
		return nil, err
	}
	now := a.now()
	if err := b.Verify(now); err != nil {
		return nil, fmt.Errorf("checking what the API returned: %w", err)
	}
	b.Issued = now
	return b, nil
}

// store writes b to every sink and, when anything changed, runs the hooks (see write
// and notify). prev is the previous material, used to name the event. The writes may
// take writeAllowance at most (a sink lock held by a stuck process must not hold the
// caller forever: once and reset-ssl pass a ctx that a stop signal does not end).
func (a *Agent) store(ctx context.Context, in *Instance, b, prev *bundle.Bundle, log *slog.Logger) (changed bool, err error) {
	wctx, cancel := context.WithTimeout(ctx, writeAllowance)
	changed, err = a.write(wctx, in, b)
	cancel()
	if err != nil || !changed {
		return changed, err
	}
	logFiles(log, b)
	return true, a.notify(ctx, in, b, prev, log)
}

// write stores b in every sink. It writes every sink even when one fails, so a healthy
// sink is not held back by a broken one; the error joins all failures.
func (a *Agent) write(ctx context.Context, in *Instance, b *bundle.Bundle) (changed bool, err error) {
	var errs []error
	for _, s := range in.Sinks {
		c, werr := s.Write(ctx, b)
		if werr != nil {
			errs = append(errs, werr)
			continue
		}
		changed = changed || c
	}
	if len(errs) > 0 {
		return changed, fmt.Errorf("writing files (hooks not run): %w", errors.Join(errs...))
	}
	return changed, nil
}

// notify runs the hooks in order for a change from prev to b.
func (a *Agent) notify(ctx context.Context, in *Instance, b, prev *bundle.Bundle, log *slog.Logger) error {
	ev := in.Event
	ev.Instance = in.Name
	ev.NotAfter = b.NotAfter()
	ev.Kind = EventCAChanged
	if b.HasClientCert() && (prev == nil || !prev.HasClientCert() || !prev.Leaf().Equal(b.Leaf())) {
		ev.Kind = EventRenewed
	}
	return a.runHooks(ctx, in, ev, log)
}

func (a *Agent) runHooks(ctx context.Context, in *Instance, ev hook.Event, log *slog.Logger) error {
	var errs []error
	for _, h := range in.Hooks {
		if err := h.Run(ctx, ev); err != nil {
			a.obs.HookRan(in.Name, false)
			errs = append(errs, err) // a hook's error names the hook
			continue
		}
		a.obs.HookRan(in.Name, true)
		log.Info("hook ran", "hook", fmt.Sprint(h), "event", ev.Kind)
	}
	return errors.Join(errs...)
}

// logFiles logs what was written, never the key: serial, not-after and fingerprints.
func logFiles(log *slog.Logger, b *bundle.Bundle) {
	attrs := []any{"ca_not_after", b.CANotAfter().UTC().Format(time.RFC3339), "cas", len(b.CAs)}
	if leaf := b.Leaf(); leaf != nil {
		attrs = append(attrs, "serial", leaf.SerialNumber.String(), "not_after", b.NotAfter().UTC().Format(time.RFC3339),
			"sha256", bundle.Fingerprint(leaf)[:16])
	}
	log.Info("files written", attrs...)
}
