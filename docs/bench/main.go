// Command bench compares dbcert-agent with the Cloud SQL Auth Proxy on the emulator:
// for N Cloud SQL instances, the time until the emulator has issued N client
// certificates and until every instance has its files (the agent's READY=1; the proxy
// keeps its certificates in memory), the CPU seconds and RSS of each process, and the
// API calls made; then,
// under an emulated quota, the time until every instance has a certificate and how
// many requests were answered 429. It is a benchmark, not a test: numbers depend on the
// machine and on what else runs on it.
//
//	go run ./docs/bench -agent ./dbcert-agent -proxy $(go env GOPATH)/bin/cloud-sql-proxy
//
// The emulator runs in this process; the agent and the proxy run as child processes
// and are measured from /proc. The proxy fetches a certificate only when a client
// connects, so the bench connects once to each of its listeners (the instances'
// addresses are 127.0.0.1:3307, where nothing listens: the connection fails after the
// certificate was issued, which is all that is measured).
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dbcert-agent/dbcert-agent/agent/emulator"
)

const project = "bench-proj"

// workDir is the -dir flag; runRoot, in it, the parent of every run's directory,
// removed when the bench ends.
var workDir, runRoot string

func main() {
	agentBin := flag.String("agent", "", "dbcert-agent binary (required)")
	proxyBin := flag.String("proxy", "", "cloud-sql-proxy binary (optional: without it only the agent is measured)")
	sizes := flag.String("n", "10,100,1000", "instance counts")
	settle := flag.Duration("settle", 10*time.Second, "wait after the last certificate before reading RSS")
	quotaN := flag.Int("quota-instances", 500, "instances of the quota run (0: skip it)")
	quotaBare := flag.Bool("quota-bare", false, "the quota run's 429s carry no Retry-After (as Google's quota answer, cloud-apis.md §7.3)")
	modes := flag.String("modes", "proxy,agent,share", "what to run: proxy, agent (default mode), share (share_keys)")
	runs := flag.Int("runs", 1, "runs of each mode per N, interleaved; more than one adds median rows")
	flag.StringVar(&workDir, "dir", os.TempDir(), "where each run's files go (the agent's sinks): its file system decides much of the agent's CPU")
	flag.Parse()
	if *runs < 1 {
		*runs = 1
	}
	if *agentBin == "" {
		fmt.Fprintln(os.Stderr, "bench: -agent is required")
		os.Exit(2)
	}
	fmt.Printf("machine: %d CPUs, %s; Go %s\n", runtime.NumCPU(), cpuModel(), runtime.Version())
	perKey := keygenTime(200)
	fmt.Printf("RSA-2048 key generation: %v per key and core (200 keys on all %d cores)\n\n", perKey.Round(time.Millisecond), runtime.NumCPU())

	fmt.Printf("files written under %s (%s)\n", workDir, fsType(workDir))
	// Every run's files stay until the bench ends: ext4 without a journal (this
	// machine's root file system) will not reuse an inode freed in the last minutes
	// (the kernel's recently_deleted check, seen in perf), so creating files right
	// after deleting thousands scans past them for every new inode; removing each
	// run's files before the next run slowed that run by about a third.
	root, err := os.MkdirTemp(workDir, "dbcert-bench")
	if err != nil {
		fail(err)
	}
	runRoot = root
	defer os.RemoveAll(root)
	if *runs > 1 {
		fmt.Printf("%d runs of each, interleaved; the median rows take each column's median\n", *runs)
	}
	fmt.Printf("\n%-32s %6s %9s %9s %9s %8s %9s %9s %8s\n", "run", "N", "start (s)", "certs (s)", "files (s)", "CPU (s)", "RSS (MB)", "API calls", "429s")
	for _, f := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			fail(err)
		}
		type mode struct {
			on    bool
			r     runner
			bin   string
			label string
			floor bool // time the keygen floor around each run (default mode)
			res   []*result
		}
		ms := []*mode{
			{on: *proxyBin != "" && strings.Contains(*modes, "proxy"), r: runProxy, bin: *proxyBin, label: "cloud-sql-proxy"},
			{on: strings.Contains(*modes, "agent"), r: runAgent(false), bin: *agentBin, label: "dbcert-agent", floor: true},
			{on: strings.Contains(*modes, "share"), r: runAgent(true), bin: *agentBin, label: "dbcert-agent share_keys"},
		}
		// The machine's speed drifts by as much as 20% within minutes (it is shared), so
		// the floor is timed again right before and right after each default-mode run
		// and the ratio taken per run, to the mean of the two; the ratios' median is
		// printed.
		var floorRatios []float64
		for range *runs {
			for _, m := range ms {
				if !m.on {
					continue
				}
				var before time.Duration
				if m.floor {
					before = floorOf(n)
				}
				r := run(m.r, m.bin, n, emulator.Quota{}, *settle, m.label)
				m.res = append(m.res, r)
				if m.floor {
					after := floorOf(n)
					runFloor := (before + after) / 2
					floorRatios = append(floorRatios, r.files.Seconds()/runFloor.Seconds())
					fmt.Printf("  (keygen floor timed just before and after: %.2f s and %.2f s; files / their mean = %.2f)\n",
						before.Seconds(), after.Seconds(), floorRatios[len(floorRatios)-1])
				}
			}
		}
		med := make([]*result, len(ms))
		for i, m := range ms {
			if len(m.res) > 1 {
				med[i] = median(m.res)
				med[i].print("median "+m.label, n, -1)
			} else if len(m.res) == 1 {
				med[i] = m.res[0]
			}
		}
		proxy, def, shared := med[0], med[1], med[2]
		if def != nil {
			slices.Sort(floorRatios)
			fmt.Printf("  default mode / keygen floor (N=%d, floor timed around each run): %.2f (median of %d)\n", n, floorRatios[len(floorRatios)/2], len(floorRatios))
		}
		if proxy != nil && shared != nil {
			fmt.Printf("  share_keys / proxy: files %.2f, CPU %.2f, RSS %.2f\n",
				shared.files.Seconds()/proxy.files.Seconds(), shared.cpu/proxy.cpu, shared.rss/proxy.rss)
		}
		if proxy != nil && def != nil {
			fmt.Printf("  default / proxy: files %.2f, CPU %.2f, RSS %.2f\n",
				def.files.Seconds()/proxy.files.Seconds(), def.cpu/proxy.cpu, def.rss/proxy.rss)
		}
	}
	if *quotaN > 0 {
		q := emulator.Quota{PerMinute: 600, PerSecond: 10, NoRetryAfter: *quotaBare}
		ra := "with Retry-After"
		if *quotaBare {
			ra = "without Retry-After"
		}
		fmt.Printf("\nquota 600/min and 10/s per identity (429s %s), %d instances (floor: %d calls at 10/s = %d s)\n", ra, *quotaN, 2**quotaN, 2**quotaN/10)
		if *proxyBin != "" {
			run(runProxy, *proxyBin, *quotaN, q, 0, "cloud-sql-proxy (quota)")
		}
		run(runAgent(true), *agentBin, *quotaN, q, 0, "dbcert-agent share_keys (quota)")
		run(runAgent(false), *agentBin, *quotaN, q, 0, "dbcert-agent (quota)")
	}
}

type result struct {
	start    time.Duration // until the first admin API request: start-up (config, keys)
	certs    time.Duration // until the emulator has issued N certificates
	files    time.Duration // until every instance has its files (see proc)
	cpu, rss float64       // CPU seconds at files; RSS after settling
	calls    int
}

// runner starts the measured process for n instances of e and makes it fetch.
type runner func(ctx context.Context, bin, dir string, e *emulator.Emulator, names []string) (*proc, error)

// proc is a measured process. files, when not nil, is closed once every instance has
// its files on disk (the agent's READY=1); without it the process keeps its
// certificates in memory, and having them is having its "files".
type proc struct {
	cmd   *exec.Cmd
	files <-chan struct{}
	log   string // its log file in the run's directory
}

func run(r runner, bin string, n int, q emulator.Quota, settle time.Duration, label string) *result {
	dir, err := os.MkdirTemp(runRoot, "run")
	if err != nil {
		fail(err)
	}
	e, err := emulator.New(emulator.Options{CertLifetime: time.Hour, Quota: q})
	if err != nil {
		fail(err)
	}
	if err := e.Start(""); err != nil {
		fail(err)
	}
	defer e.Close()
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("db%04d", i)
		e.AddCloudSQLInstance(project, names[i], emulator.CloudSQLInstance{})
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	p, err := r(ctx, bin, dir, e, names)
	if err != nil {
		fail(fmt.Errorf("%s: %w", label, err))
	}
	cmd := p.cmd
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	defer func() { _ = cmd.Process.Kill(); <-exited }()
	deadline := start.Add(15 * time.Minute)
	early := func() {
		log, _ := os.ReadFile(filepath.Join(dir, p.log))
		fail(fmt.Errorf("%s exited early: %s", label, log))
	}
	for e.Issued() < n {
		select {
		case <-exited:
			early()
		default:
		}
		if time.Now().After(deadline) {
			fail(fmt.Errorf("%s: only %d of %d certificates after 15 minutes", label, e.Issued(), n))
		}
		time.Sleep(20 * time.Millisecond)
	}
	res := &result{certs: time.Since(start)}
	res.files = res.certs
	if p.files != nil {
		select {
		case <-p.files:
			res.files = time.Since(start)
		case <-exited:
			early()
		case <-time.After(time.Until(deadline)):
			fail(fmt.Errorf("%s: no READY=1 after 15 minutes", label))
		}
	}
	res.calls, res.start = apiCalls(e, start)
	res.cpu = cpuSeconds(cmd.Process.Pid)
	time.Sleep(settle)
	res.rss = rssMB(cmd.Process.Pid)
	_, throttled := e.QuotaCounts()
	res.print(label, n, throttled)
	return res
}

func (r *result) print(label string, n, throttled int) {
	t := ""
	if throttled >= 0 {
		t = strconv.Itoa(throttled)
	}
	fmt.Printf("%-32s %6d %9.2f %9.2f %9.2f %8.2f %9.1f %9d %8s\n", label, n, r.start.Seconds(), r.certs.Seconds(), r.files.Seconds(), r.cpu, r.rss, r.calls, t)
}

// apiCalls counts the admin API requests (not the token endpoint) and says when, after
// start, the first one arrived.
func apiCalls(e *emulator.Emulator, start time.Time) (n int, first time.Duration) {
	for _, r := range e.Requests() {
		if strings.HasPrefix(r.Path, "/sql/") || strings.HasPrefix(r.Path, "/v1/") {
			if d := r.Time.Sub(start); n == 0 || d < first {
				first = d
			}
			n++
		}
	}
	return n, first
}

func saFile(e *emulator.Emulator, dir string) (string, error) {
	js, err := e.ServiceAccountJSON("bench@" + project + ".iam.gserviceaccount.com")
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, "sa.json")
	return p, os.WriteFile(p, js, 0o600)
}

func runAgent(share bool) runner {
	return func(ctx context.Context, bin, dir string, e *emulator.Emulator, names []string) (*proc, error) {
		sa, err := saFile(e, dir)
		if err != nil {
			return nil, err
		}
		var b strings.Builder
		fmt.Fprintf(&b, "agent {\n  log_level = \"warn\"\n  share_keys = %v\n}\n", share)
		fmt.Fprintf(&b, "credentials \"google\" \"bench\" {\n  credentials_file = %q\n}\n", sa)
		rot := ""
		if share {
			rot = "key_rotation = \"24h\"\n  "
		}
		for _, n := range names {
			fmt.Fprintf(&b, "instance \"cloudsql\" %q {\n  project = %q\n  instance = %q\n  credentials = \"bench\"\n  api_endpoint = %q\n  %ssink \"file\" { dir = %q }\n}\n",
				n, project, n, e.URL(), rot, filepath.Join(dir, "out", n))
		}
		cfg := filepath.Join(dir, "agent.hcl")
		if err := os.WriteFile(cfg, []byte(b.String()), 0o600); err != nil {
			return nil, err
		}
		sock := filepath.Join(dir, "notify.sock")
		files, err := readyListener(ctx, sock)
		if err != nil {
			return nil, err
		}
		cmd := exec.CommandContext(ctx, bin, "run", "-config", cfg)
		cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
		cmd.Stderr = logFile(dir, "agent.log")
		return &proc{cmd: cmd, files: files, log: "agent.log"}, cmd.Start()
	}
}

// readyListener listens on a notification socket at path, as systemd does for a
// Type=notify service; the channel is closed at the first READY=1 (the agent sends it
// once every instance has valid files on disk, at most 20 ms after the last one).
func readyListener(ctx context.Context, path string) (<-chan struct{}, error) {
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, err
	}
	context.AfterFunc(ctx, func() { c.Close() })
	ready := make(chan struct{})
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			if slices.Contains(strings.Split(string(buf[:n]), "\n"), "READY=1") {
				close(ready)
				return
			}
		}
	}()
	return ready, nil
}

func runProxy(ctx context.Context, bin, dir string, e *emulator.Emulator, names []string) (*proc, error) {
	sa, err := saFile(e, dir)
	if err != nil {
		return nil, err
	}
	port := 21000
	args := []string{"--sqladmin-api-endpoint", e.URL(), "--credentials-file", sa, "--address", "127.0.0.1",
		"--port", strconv.Itoa(port), "--max-sigterm-delay", "0s"}
	for _, n := range names {
		args = append(args, project+":us-central1:"+n)
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	out := logFile(dir, "proxy.log")
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, log: "proxy.log"}
	pw.Close()
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		once := sync.Once{}
		for sc.Scan() {
			fmt.Fprintln(out, sc.Text())
			if strings.Contains(sc.Text(), "ready for new connections") {
				once.Do(func() { close(ready) })
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(2 * time.Minute):
		return p, fmt.Errorf("the proxy did not get ready (see %s)", filepath.Join(dir, "proxy.log"))
	}
	// One client connection per listener, kept going until every certificate is issued
	// (a connection refused by a 429 is tried again, like an application would).
	go func() {
		for e.Issued() < len(names) && ctx.Err() == nil {
			var wg sync.WaitGroup
			sem := make(chan struct{}, 64)
			for i := range names {
				wg.Add(1)
				sem <- struct{}{}
				go func() {
					defer wg.Done()
					defer func() { <-sem }()
					c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port+i), 5*time.Second)
					if err == nil {
						_ = c.SetDeadline(time.Now().Add(30 * time.Second))
						buf := make([]byte, 1)
						_, _ = c.Read(buf) // the proxy closes it when its dial fails
						c.Close()
					}
				}()
			}
			wg.Wait()
			time.Sleep(2 * time.Second)
		}
	}()
	return p, nil
}

func logFile(dir, name string) *os.File {
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		fail(err)
	}
	return f
}

func keygenTime(n int) time.Duration {
	// On every core at once, like the agent's first round: one core's time per key
	// differs when the other cores work too (shared caches, a virtual machine's
	// neighbours), and keys vary a lot, so many are timed.
	workers := runtime.NumCPU()
	var wg sync.WaitGroup
	start := time.Now()
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				if _, err := rsa.GenerateKey(rand.Reader, 2048); err != nil {
					fail(err)
				}
			}
		})
	}
	wg.Wait()
	return time.Since(start) * time.Duration(workers) / time.Duration(n)
}

// floorOf is the RSA-2048 key-generation floor for n keys on this machine now: n ×
// the time per key and core / cores.
func floorOf(n int) time.Duration {
	return time.Duration(n) * keygenTime(200) / time.Duration(runtime.NumCPU())
}

// median takes each column's median of rs (the upper one of an even count).
func median(rs []*result) *result {
	pick := func(f func(*result) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	return &result{
		start: time.Duration(pick(func(r *result) float64 { return float64(r.start) })),
		certs: time.Duration(pick(func(r *result) float64 { return float64(r.certs) })),
		files: time.Duration(pick(func(r *result) float64 { return float64(r.files) })),
		cpu:   pick(func(r *result) float64 { return r.cpu }),
		rss:   pick(func(r *result) float64 { return r.rss }),
		calls: int(pick(func(r *result) float64 { return float64(r.calls) })),
	}
}

// fsType names the file system dir is on, by statfs(2) magic.
func fsType(dir string) string {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return "unknown file system"
	}
	switch st.Type {
	case 0xEF53:
		return "ext2/3/4"
	case 0x01021994:
		return "tmpfs"
	case 0x58465342:
		return "xfs"
	case 0x9123683E:
		return "btrfs"
	case 0x794C7630:
		return "overlayfs"
	}
	return fmt.Sprintf("file system type %#x", st.Type)
}

func cpuModel() string {
	data, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func cpuSeconds(pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(data)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseFloat(fields[11], 64)
	st, _ := strconv.ParseFloat(fields[12], 64)
	return (ut + st) / 100 // USER_HZ is 100 on Linux
}

func rssMB(pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			kb, _ := strconv.ParseFloat(strings.Fields(l)[1], 64)
			return kb / 1024
		}
	}
	return 0
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	if runRoot != "" {
		os.RemoveAll(runRoot)
	}
	os.Exit(1)
}
