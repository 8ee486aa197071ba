package darktrace

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dtfleet/dtfleet/internal/config"
)

// TestFetchMaxEventSize (issue 9, row 7): an event over Request.MaxEventSize is not handed to the
// callback but reported to TooLarge with its index and compact size, the events around it are
// delivered, and an error from TooLarge stops the fetch as one from the callback does.
func TestFetchMaxEventSize(t *testing.T) {
	t.Parallel()
	big := `{"pbid":2,"pad":"` + strings.Repeat("x", 200<<10) + `"}`
	body := `[{"pbid":1}, ` + big + `, {"pbid":3}]`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(body))
	}))
	defer srv.Close()
	c := newClient(t, srv.URL, nil, nil)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)
	req := Request{Service: config.ServiceModelBreaches, Start: start, End: start.Add(time.Hour), MaxEventSize: 64 << 10}
	type report struct {
		index int
		size  int64
	}
	var reports []report
	req.TooLarge = func(index int, size int64, _ []byte) error {
		reports = append(reports, report{index, size})
		return nil
	}
	var got []string
	st, err := c.Fetch(ctx, req, func(raw []byte) error {
		got = append(got, string(raw))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{`{"pbid":1}`, `{"pbid":3}`}; !slices.Equal(got, want) || st.Events != 2 {
		t.Fatalf("events %q (Stats.Events %d); want %q", got, st.Events, want)
	}
	if want := []report{{1, int64(len(big))}}; !slices.Equal(reports, want) {
		t.Fatalf("too large %v; want %v", reports, want)
	}

	stop := errors.New("stop")
	req.TooLarge = func(int, int64, []byte) error { return stop }
	_, err = c.Fetch(ctx, req, func([]byte) error { return nil })
	var dtErr *Error
	if !errors.Is(err, stop) || errors.As(err, &dtErr) {
		t.Fatalf("err = %v; want TooLarge's error, unclassified", err)
	}
}
