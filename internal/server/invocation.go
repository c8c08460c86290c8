package server

import (
	"fmt"
	"log/slog"
	"net/http"

	"github.com/vmrescue/vmrescue/internal/hostproto"
)

// invocation carries one invocation's logger and the log lines returned to the host.
type invocation struct {
	log   *slog.Logger
	attrs []any // key/values of the invocation, attached when a line is logged
	logs  []string
}

func newInvocation(l *slog.Logger, function string) *invocation {
	return &invocation{log: l, attrs: []any{"function", function}}
}

// with adds key/values to every line this invocation logs. They are kept, not bound to a new
// logger, so that an invocation that logs nothing costs nothing.
func (inv *invocation) with(args ...any) { inv.attrs = append(inv.attrs, args...) }

// logf logs a line and keeps it for the response's Logs, which the host writes to its own log.
func (inv *invocation) logf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	inv.log.Info("invocation", append(inv.attrs, "msg", msg)...)
	inv.logs = append(inv.logs, msg)
}

func (inv *invocation) write(w http.ResponseWriter, status int, err error) {
	resp := hostproto.Response{Outputs: map[string]any{}, Logs: inv.logs}
	if err != nil {
		resp.ReturnValue = map[string]any{"error": err.Error()}
	}
	hostproto.Write(w, status, resp)
}
