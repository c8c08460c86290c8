package localhost

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"time"

	"github.com/vmrescue/vmrescue/internal/config"
)

// Bounds of the child process's life cycle.
const (
	// DefaultReadyTimeout bounds how long a started handler may take to answer GET /.
	DefaultReadyTimeout = 30 * time.Second
	// DefaultStopTimeout is how long a handler has after SIGTERM before it is killed; it is longer
	// than the handler's default VMRESCUE_SHUTDOWN_TIMEOUT (25s).
	DefaultStopTimeout = 30 * time.Second
	// readyPollInterval is the pause between readiness probes.
	readyPollInterval = 10 * time.Millisecond
	// readyProbeTimeout bounds one readiness probe.
	readyProbeTimeout = 2 * time.Second
	// restartBackoffMin and restartBackoffMax bound the pause before restarting a dead handler; it
	// doubles with each death and starts over once the handler has run for stableAfter.
	restartBackoffMin = 100 * time.Millisecond
	restartBackoffMax = 5 * time.Second
	stableAfter       = 30 * time.Second
)

// ErrChildStopped is returned by WaitReady once the child has been stopped.
var ErrChildStopped = errors.New("handler stopped")

// ChildOptions configures the custom handler child process.
type ChildOptions struct {
	Path string   // the executable
	Args []string // its arguments ("serve")
	Dir  string   // working directory; empty is the current one
	// Env is the child's environment, on top of this process's; FUNCTIONS_CUSTOMHANDLER_PORT is
	// set by the supervisor.
	Env []string
	// Port is the port the child listens on; 0 picks a free one at the first start and keeps it
	// across restarts.
	Port         int
	Output       io.Writer // the child's stdout and stderr, one prefixed line at a time
	Prefix       string    // e.g. "[handler] "
	ReadyTimeout time.Duration
	StopTimeout  time.Duration
	Logger       *slog.Logger
}

// Child runs the custom handler as the Functions host does: it starts the process with
// FUNCTIONS_CUSTOMHANDLER_PORT, waits until GET / answers, restarts it with backoff when it dies,
// and stops it with SIGTERM, then SIGKILL after StopTimeout.
type Child struct {
	opts ChildOptions
	log  *slog.Logger
	out  *lineWriter

	mu        sync.Mutex
	pid       int
	proc      *os.Process
	exited    chan struct{} // closed when the current process has exited
	ready     chan struct{} // closed once the current process is ready; replaced when it exits
	started   time.Time
	restarts  int
	exits     []string
	stopping  bool
	stopped   chan struct{} // closed when the supervisor has returned
	stopCh    chan struct{} // closed by Stop
	readyErr  error
	firstDone chan struct{} // closed when the first start is ready or has failed
}

// StartChild starts the handler and waits until it is ready for the first time.
func StartChild(ctx context.Context, opts ChildOptions) (*Child, error) {
	if opts.Path == "" {
		return nil, errors.New("handler: no executable")
	}
	if opts.ReadyTimeout <= 0 {
		opts.ReadyTimeout = DefaultReadyTimeout
	}
	if opts.StopTimeout <= 0 {
		opts.StopTimeout = DefaultStopTimeout
	}
	if opts.Output == nil {
		opts.Output = io.Discard
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Port == 0 {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		opts.Port = p
	}
	c := &Child{
		opts: opts, log: opts.Logger, out: &lineWriter{w: opts.Output, prefix: opts.Prefix},
		ready: make(chan struct{}), stopped: make(chan struct{}), stopCh: make(chan struct{}),
		firstDone: make(chan struct{}),
	}
	go c.supervise()
	select {
	case <-c.firstDone:
	case <-ctx.Done():
		c.Stop()
		return nil, ctx.Err()
	}
	c.mu.Lock()
	err := c.readyErr
	c.mu.Unlock()
	if err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

// Port is the port the handler listens on.
func (c *Child) Port() int { return c.opts.Port }

// URL is the handler's base URL, http://127.0.0.1:PORT.
func (c *Child) URL() string { return "http://127.0.0.1:" + strconv.Itoa(c.opts.Port) }

// PID is the process id of the running handler, 0 while none runs.
func (c *Child) PID() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pid
}

// Restarts counts the restarts after the handler died.
func (c *Child) Restarts() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.restarts
}

// Ready reports whether the handler answers its readiness probe.
func (c *Child) Ready() bool {
	c.mu.Lock()
	ch := c.ready
	c.mu.Unlock()
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// Exits lists how each handler process ended, oldest first (the last 20).
func (c *Child) Exits() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.exits...)
}

// WaitReady waits until the handler is ready, ctx ends, or the child is stopped.
func (c *Child) WaitReady(ctx context.Context) error {
	for {
		c.mu.Lock()
		ch, stopping := c.ready, c.stopping
		c.mu.Unlock()
		if stopping {
			return ErrChildStopped
		}
		select {
		case <-ch:
			return nil
		case <-c.stopCh:
			return ErrChildStopped
		case <-ctx.Done():
			return fmt.Errorf("handler not ready: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond): // the ready channel may have been replaced
		}
	}
}

// Suspect tells the supervisor that a request to process pid failed in transit: until it answers
// its readiness probe again, or a new process replaces it, the handler counts as not ready, so
// that a redelivery does not go to a process that has died but is not yet reaped.
func (c *Child) Suspect(pid int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pid != pid || c.proc == nil {
		return
	}
	select {
	case <-c.ready:
	default:
		return // already not ready
	}
	readyCh, proc, exited := make(chan struct{}), c.proc, c.exited
	c.ready = readyCh
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), c.opts.ReadyTimeout)
		defer cancel()
		if c.probe(ctx, exited) != nil {
			return // it exited (the supervisor restarts it) or hangs (it stays not ready)
		}
		c.mu.Lock()
		if c.proc == proc && c.ready == readyCh {
			close(readyCh)
		}
		c.mu.Unlock()
	}()
}

// Stop ends the handler: SIGTERM, then SIGKILL after StopTimeout. It waits for the process.
func (c *Child) Stop() {
	c.mu.Lock()
	if !c.stopping {
		c.stopping = true
		close(c.stopCh)
	}
	c.mu.Unlock()
	<-c.stopped
}

// supervise starts the handler and starts it again whenever it dies, until Stop.
func (c *Child) supervise() {
	defer close(c.stopped)
	backoff := restartBackoffMin
	first := true
	for {
		runStart := time.Now()
		err := c.runOnce(first)
		first = false
		c.mu.Lock()
		stopping := c.stopping
		c.mu.Unlock()
		if stopping {
			return
		}
		if time.Since(runStart) > stableAfter {
			backoff = restartBackoffMin
		}
		c.log.Warn("handler exited; restarting", "err", err, "backoff", backoff.String())
		select {
		case <-c.stopCh:
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, restartBackoffMax)
		c.mu.Lock()
		c.restarts++
		c.mu.Unlock()
	}
}

// runOnce runs one handler process until it exits or Stop ends it.
func (c *Child) runOnce(first bool) error {
	cmd := exec.Command(c.opts.Path, c.opts.Args...)
	cmd.Dir = c.opts.Dir
	cmd.Env = append(append(os.Environ(), c.opts.Env...),
		config.Port+"="+strconv.Itoa(c.opts.Port))
	cmd.Stdout, cmd.Stderr = c.out, c.out
	setProcessGroup(cmd)
	if err := cmd.Start(); err != nil {
		err = fmt.Errorf("start handler %s: %w", c.opts.Path, err)
		c.firstResult(first, err)
		return err
	}
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		c.out.Flush()
		close(exited)
	}()
	readyCh := make(chan struct{})
	c.mu.Lock()
	c.pid, c.proc, c.started, c.exited = cmd.Process.Pid, cmd.Process, time.Now(), exited
	c.ready = readyCh
	c.mu.Unlock()
	c.log.Info("handler started", "pid", cmd.Process.Pid, "port", c.opts.Port)

	probeCtx, cancelProbe := context.WithCancel(context.Background())
	defer cancelProbe()
	go func() {
		err := c.probe(probeCtx, exited)
		if err == nil {
			c.mu.Lock()
			if c.proc == cmd.Process { // still this process: it has not exited meanwhile
				close(readyCh)
			}
			c.mu.Unlock()
			c.log.Info("handler ready", "pid", cmd.Process.Pid, "after", time.Since(c.started).Round(time.Millisecond).String())
		}
		c.firstResult(first, err)
	}()

	select {
	case <-exited:
	case <-c.stopCh:
		terminate(cmd.Process, false)
		select {
		case <-exited:
		case <-time.After(c.opts.StopTimeout):
			c.log.Warn("handler did not stop in time; killing it", "pid", cmd.Process.Pid, "after", c.opts.StopTimeout.String())
			terminate(cmd.Process, true)
			<-exited
		}
	}
	cancelProbe()
	c.mu.Lock()
	c.pid, c.proc, c.exited = 0, nil, nil
	c.ready = make(chan struct{})
	exit := fmt.Sprintf("pid %d: %v", cmd.Process.Pid, describeExit(waitErr))
	c.exits = append(c.exits, exit)
	if len(c.exits) > 20 {
		c.exits = c.exits[len(c.exits)-20:]
	}
	c.mu.Unlock()
	c.log.Info("handler exited", "pid", cmd.Process.Pid, "status", describeExit(waitErr))
	return fmt.Errorf("handler %s", exit)
}

func describeExit(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

func (c *Child) firstResult(first bool, err error) {
	if !first {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.firstDone:
	default:
		c.readyErr = err
		close(c.firstDone)
	}
}

var errExitedBeforeReady = errors.New("handler exited before it was ready (see its log above)")

// probe polls GET / until it answers 200, the process exits, or ReadyTimeout passes.
func (c *Child) probe(ctx context.Context, exited <-chan struct{}) error {
	deadline := time.Now().Add(c.opts.ReadyTimeout)
	client := &http.Client{Timeout: readyProbeTimeout}
	url := c.URL() + "/"
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-exited:
			return errExitedBeforeReady
		case <-ctx.Done():
			// runOnce cancels the probe when the process exits: both are ready, and select
			// picks at random, so the exit is checked first.
			select {
			case <-exited:
				return errExitedBeforeReady
			default:
			}
			return ctx.Err()
		case <-time.After(readyPollInterval):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("handler did not answer GET / on port %d within %s", c.opts.Port, c.opts.ReadyTimeout)
		}
	}
}

// lineWriter writes whole lines, each with a prefix; it is shared by stdout and stderr.
type lineWriter struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
	buf    []byte
}

func (l *lineWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		l.emit(l.buf[:i+1])
		l.buf = l.buf[i+1:]
	}
	if len(l.buf) > 64<<10 { // an endless line: pass it on in pieces
		l.emit(append(l.buf, '\n'))
		l.buf = l.buf[:0]
	}
	return len(p), nil
}

func (l *lineWriter) emit(line []byte) {
	_, _ = l.w.Write(append([]byte(l.prefix), line...))
}

// Flush writes a last unterminated line.
func (l *lineWriter) Flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf) > 0 {
		l.emit(append(l.buf, '\n'))
		l.buf = l.buf[:0]
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
