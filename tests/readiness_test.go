package tests

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/scanwire/scanwire/internal/app"
	"github.com/scanwire/scanwire/internal/events"
)

// /readyz tells the truth about a stalled consumer: while fan-out's only
// worker is held by events whose callback host never answers and more
// events wait, readiness fails and names the consumer; once the backlog
// is through, it is ready again.
func TestReadinessFailsOnAStalledConsumer(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, "", withGateway(), func(c *app.Config) {
		c.Fanout.Workers = 1
		c.Gateway.StallAfter = time.Second
	})
	ready := func() (int, string) {
		resp, err := http.Get("http://" + p.HTTPAddr() + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct {
			Error string `json:"error"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body.Error
	}
	if code, msg := ready(); code != 200 {
		t.Fatalf("/readyz before any work = %d %s", code, msg)
	}
	for i := range 3 {
		scan := fmt.Sprintf("slow-%d", i)
		p.publish(t, "acme", events.TypeScanStarted, scan, map[string]any{"scan_id": scan, "target": "t",
			"callback_url": "https://cb.slow.example.org/done"})
	}
	var reason string
	eventually(t, 10*time.Second, func() bool {
		code, msg := ready()
		reason = msg
		return code == 503 && strings.Contains(msg, "consumer fanout on SCAN_EVENTS is stalled")
	})
	t.Logf("/readyz said: %s", reason)
	eventually(t, 30*time.Second, func() bool { code, _ := ready(); return code == 200 })
}
