package darktrace

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

// TestRequestMetrics: every request is observed by endpoint and status class, a retryable
// failure counts a retry by its kind, a terminal one does not, and the appliance's Date header
// gives its clock offset.
func TestRequestMetrics(t *testing.T) {
	t.Parallel()
	ahead := time.Hour
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Date", time.Now().Add(ahead).UTC().Format(http.TimeFormat))
		switch r.URL.Path {
		case "/ok":
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, "[]")
		case "/busy":
			w.WriteHeader(http.StatusServiceUnavailable)
		default:
			w.WriteHeader(http.StatusForbidden)
		}
	}))
	defer srv.Close()
	m := NewMetrics()
	if _, ok := m.ApplianceOffset("dt"); ok {
		t.Fatal("an offset before any response")
	}
	c, err := New(Config{BaseURL: srv.URL, PublicToken: "pub", PrivateToken: "priv", Metrics: m, Input: "dt"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	consume := func(r io.Reader) error { _, err := io.Copy(io.Discard, r); return err }
	var n int64
	for _, path := range []string{"/ok", "/ok", "/busy", "/denied"} {
		_ = c.do(ctx, path, "", &n, nil, consume, nil)
	}
	tests := []struct {
		endpoint, class string
		want            int
	}{
		{"/ok", "2xx", 2},
		{"/busy", "5xx", 1},
		{"/denied", "4xx", 1},
	}
	for _, tt := range tests {
		h := m.duration.WithLabelValues("dt", tt.endpoint, tt.class).(prometheus.Metric)
		if got := testutil.CollectAndCount(m.duration); got != 3 {
			t.Fatalf("duration series = %d, want 3", got)
		}
		if got := sampleCount(t, h); got != tt.want {
			t.Errorf("requests %s %s = %d, want %d", tt.endpoint, tt.class, got, tt.want)
		}
	}
	if got := testutil.ToFloat64(m.retries.WithLabelValues("dt", KindServer.String())); got != 1 {
		t.Errorf("server retries = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.retries.WithLabelValues("dt", KindPermission.String())); got != 0 {
		t.Errorf("permission (terminal) retries = %v, want 0", got)
	}
	off, ok := m.ApplianceOffset("dt")
	if !ok || off < ahead-5*time.Second || off > ahead+5*time.Second {
		t.Errorf("ApplianceOffset = %v, %v; want about %v", off, ok, ahead)
	}
	var none *Metrics // a nil Metrics records nothing and knows no offset
	none.observe("dt", "/ok", nil, nil, time.Second, time.Now())
	if _, ok := none.ApplianceOffset("dt"); ok {
		t.Error("a nil Metrics knows an offset")
	}
}

// sampleCount is the number of observations of one histogram series.
func sampleCount(t *testing.T, o interface{ Write(*dto.Metric) error }) int {
	t.Helper()
	var m dto.Metric
	if err := o.Write(&m); err != nil {
		t.Fatal(err)
	}
	return int(m.GetHistogram().GetSampleCount())
}
