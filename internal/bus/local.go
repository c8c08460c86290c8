package bus

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/vmrescue/vmrescue/internal/incident"
)

// LocalPath is the path, under the local host's bus URL, that takes an Envelope by POST.
const LocalPath = "/messages"

// Local sends to the in-memory queues of `handler local` by POSTing an Envelope as JSON to
// <base>/messages. The local host answers 202 when it queued the message, or when duplicate
// detection absorbed it.
type Local struct {
	base   string
	client *http.Client
}

// NewLocal sends to the local host at base, for example http://127.0.0.1:7071/runtime/bus.
func NewLocal(base string, client *http.Client) (*Local, error) {
	u, err := url.Parse(base)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("local bus: invalid URL %q", base)
	}
	if client == nil {
		client = &http.Client{Timeout: sendTimeout}
	}
	return &Local{base: base, client: client}, nil
}

// Send implements Sender.
func (l *Local) Send(ctx context.Context, msg incident.Message, opts SendOptions) error {
	env, err := NewEnvelope(msg, opts)
	if err != nil {
		return err
	}
	body, err := json.Marshal(env)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, l.base+LocalPath, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := l.client.Do(req)
	if err != nil {
		return fmt.Errorf("send %s to %s: %w", env.MessageID, env.Queue, err)
	}
	defer resp.Body.Close()
	detail, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("send %s to %s: local host answered %s: %s", env.MessageID, env.Queue, resp.Status, bytes.TrimSpace(detail))
	}
	return nil
}
