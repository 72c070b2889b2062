package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"time"
)

// OnceOptions select what `once` does. Zero values are defaults.
type OnceOptions struct {
	// Instances limits the run to these names; empty means every instance.
	Instances []string
	// Force refreshes instances whose files are complete, matching and not yet due.
	Force bool
	// Timeout bounds fetching, retries included; default 1 minute. Writing files and
	// running hooks are not cut short by it (hooks have their own timeouts).
	Timeout time.Duration
}

// InstanceError is the failure of one instance in a run.
type InstanceError struct {
	Instance string
	Err      error
}

func (e *InstanceError) Error() string { return fmt.Sprintf("instance %q: %v", e.Instance, e.Err) }
func (e *InstanceError) Unwrap() error { return e.Err }

// RunError lists the instances that failed in `once`. Its Error is one line naming
// them; print Failed for the reasons, one sentence per instance.
type RunError struct {
	Failed []*InstanceError
	Total  int
}

func (e *RunError) Error() string {
	names := make([]string, len(e.Failed))
	for i, f := range e.Failed {
		names[i] = f.Instance
	}
	return fmt.Sprintf("%d of %d instances failed: %s", len(e.Failed), e.Total, strings.Join(names, ", "))
}

// Unwrap returns the instances' errors, so errors.Is and errors.As see through a run.
func (e *RunError) Unwrap() []error {
	errs := make([]error, len(e.Failed))
	for i, f := range e.Failed {
		errs[i] = f
	}
	return errs
}

// Once fetches and writes every selected instance (up to Options.Parallel at a time),
// runs hooks where files changed, and returns a *RunError naming the instances that
// failed. An instance whose files are complete, matching and not yet due is skipped
// unless o.Force. An unknown name in o.Instances is an error before anything runs.
func (a *Agent) Once(ctx context.Context, o OnceOptions) error {
	selected, err := a.selectInstances(o.Instances)
	if err != nil {
		return err
	}
	if o.Timeout <= 0 {
		o.Timeout = time.Minute
	}
	fetchCtx, cancel := context.WithTimeoutCause(ctx, o.Timeout, fmt.Errorf("-timeout %s ran out", o.Timeout))
	defer cancel()

	var (
		mu     sync.Mutex
		failed []*InstanceError
		wg     sync.WaitGroup
		slots  = make(chan struct{}, a.parallel)
	)
	for _, in := range selected {
		wg.Add(1)
		slots <- struct{}{}
		go func() {
			defer func() { <-slots; wg.Done() }()
			// A failure is not logged here: the caller reports each one, once.
			if err := a.onceInstance(ctx, fetchCtx, in, o.Force); err != nil {
				mu.Lock()
				failed = append(failed, &InstanceError{Instance: in.Name, Err: err})
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(failed) == 0 {
		return nil
	}
	// Report in config order.
	ordered := make([]*InstanceError, 0, len(failed))
	for _, in := range selected {
		for _, f := range failed {
			if f.Instance == in.Name {
				ordered = append(ordered, f)
			}
		}
	}
	return &RunError{Failed: ordered, Total: len(selected)}
}

// UnknownInstanceError names an -instance that is not in the configuration.
type UnknownInstanceError struct {
	Name  string
	Known []string
}

func (e *UnknownInstanceError) Error() string {
	return fmt.Sprintf("no instance named %q in the configuration (instances: %s)", e.Name, strings.Join(e.Known, ", "))
}

func (a *Agent) selectInstances(names []string) ([]*Instance, error) {
	if len(names) == 0 {
		return a.instances, nil
	}
	byName := make(map[string]*Instance, len(a.instances))
	known := make([]string, 0, len(a.instances))
	for _, in := range a.instances {
		byName[in.Name] = in
		known = append(known, in.Name)
	}
	var out []*Instance
	seen := map[string]bool{}
	for _, n := range names {
		in, ok := byName[n]
		if !ok {
			return nil, &UnknownInstanceError{Name: n, Known: known}
		}
		if !seen[n] {
			seen[n] = true
			out = append(out, in)
		}
	}
	return out, nil
}

// onceInstance refreshes one instance: skip when up to date, else fetch (bounded by
// fetchCtx), then write and run hooks under ctx's values but not its cancellation.
func (a *Agent) onceInstance(ctx, fetchCtx context.Context, in *Instance, force bool) error {
	log := a.log.With("instance", in.Name)
	now := a.now()
	cur, curErr := a.current(in, now)
	if curErr == nil && !force {
		at := in.renewAt(cur, 0)
		if !in.NeedsKey {
			at = in.nextDownload(cur, now)
		}
		if at.IsZero() || now.Before(at) {
			log.Info("files are up to date; skipping (use -force to refresh anyway)",
				"not_after", fmtTime(cur.NotAfter()), "renew_at", fmtTime(at))
			return nil
		}
		log.Info("files are due for renewal", "not_after", cur.NotAfter().UTC().Format(time.RFC3339))
	} else if curErr != nil && !errors.Is(curErr, fs.ErrNotExist) {
		log.Info("files on disk need replacing", "reason", curErr)
	}
	b, err := a.fetch(fetchCtx, in, cur, log)
	if err != nil {
		return err
	}
	// Writes and hooks are not cut short by a stop signal (a hook's timeout bounds it).
	changed, err := a.store(context.WithoutCancel(ctx), in, b, cur, log)
	if err != nil {
		return err
	}
	if !changed {
		log.Info("files unchanged")
	}
	return nil
}
