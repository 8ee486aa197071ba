package bench

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/worker/darktrace"
	"github.com/dtfleet/dtfleet/worker/darktrace/darktracetest"
)

// PreRendered says how the throughput run's data requests were answered: from the responses
// rendered before the run (Served) or, missing the index, by the live fake appliance (Missed).
type PreRendered struct {
	Served int64 `json:"served"`
	Missed int64 `json:"missed"`
	// Bytes is the size of the file of rendered responses.
	Bytes int64 `json:"bytes"`
}

// prerendered holds the responses of a run's slots, rendered once before the run into one file
// of the run's directory, and an index from request key (requestKey) to where each lies. The
// responses are kept out of the Go heap: 100 slots of 10 MB would make the fleet's garbage
// collector thrash under its memory limit. Served from the file with sendfile, they cost the run
// no rendering, and the ceiling splits the very same bytes.
type prerendered struct {
	path  string
	index map[string]span
	// slots are the run's slot requests in slot order, with the time each is polled at (its
	// start, as the ceiling processes it).
	slots []renderedSlot
	size  int64
	// serve says whether serveFake may answer from the file: only when the fake answers
	// without delay or throttling, so that the file's answer is the fake's answer.
	serve bool

	served, missed atomic.Int64
}

type span struct {
	off, n      int64
	contentType string
}

type renderedSlot struct {
	key  string
	poll time.Time
}

// requestKey is what identifies a response: the fake appliance answers a signed GET by its
// path and query alone (the query holding the window, the service's flags), so two requests
// with the same path and raw query get the same body.
func requestKey(path, rawQuery string) string { return path + "?" + rawQuery }

// slotRequests returns the requests the worker makes for the run's slots: the lane's window
// requests, slot i covering [dataStart+i·w, dataStart+(i+1)·w) with the lane's look-back. After
// the run's slots come those the coordinator plans while the run ends, up to now (the data ends
// two hours before now and the bench's safety lag is 0): their breaches, created after the
// data's end, are few but their requests are the run's too.
func (e *benchEnv) slotRequests() (*config.Lane, []darktrace.Request, error) {
	var ln *config.Lane
	for _, l := range e.cfg.Lanes() {
		if l.Service == config.ServiceModelBreaches {
			ln = &l
			break
		}
	}
	if ln == nil {
		return nil, nil, fmt.Errorf("no %s lane in the bench's configuration", config.ServiceModelBreaches)
	}
	w := e.r.o.Window
	now := time.Now()
	var reqs []darktrace.Request
	for i := 0; ; i++ {
		start := e.dataStart.Add(time.Duration(i) * w)
		if i >= e.spec.slots && start.Add(w).After(now) {
			return ln, reqs, nil
		}
		reqs = append(reqs, darktrace.Request{Service: ln.Service, Endpoint: ln.Svc.Endpoint, Start: start, End: start.Add(w), LookBack: ln.Svc.LookBack})
	}
}

// prerender renders each of the run's slot responses once, as a fake appliance with the run's
// data (but no latency) answers the worker's request for it, into one file in the run's
// directory. The file is served during the run only if the run's fake answers without latency,
// jitter or throttling (else the live fake answers and the file serves the ceiling only).
func (e *benchEnv) prerender() (err error) {
	_, reqs, err := e.slotRequests()
	if err != nil {
		return err
	}
	opts := e.fake.Options()
	p := &prerendered{path: filepath.Join(e.dir, "responses.bin"), index: make(map[string]span, len(reqs)),
		serve: opts.Latency == 0 && opts.Jitter == 0 && opts.LatencyPerInFlight == 0 && opts.RateLimitAbove == 0}
	// A handler of its own, so that the run's fake counts the run's requests only.
	opts.Latency, opts.Jitter, opts.LatencyPerInFlight, opts.RateLimitAbove, opts.Logger = 0, 0, 0, 0, nil
	fake := darktracetest.NewHandler(opts)
	defer fake.Close()
	f, err := os.Create(p.path)
	if err != nil {
		return fmt.Errorf("creating the file of rendered responses: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("writing the file of rendered responses: %w", cerr)
		}
	}()
	fw := &fileResponse{w: bufio.NewWriterSize(f, 1<<20)}
	for i, req := range reqs {
		hreq, err := signedRequest(req)
		if err != nil {
			return fmt.Errorf("slot %d: %w", i, err)
		}
		fw.reset()
		fake.ServeHTTP(fw, hreq)
		if fw.code != http.StatusOK {
			return fmt.Errorf("slot %d: the fake appliance answered %s with %d", i, hreq.URL.Path, fw.code)
		}
		key := requestKey(hreq.URL.Path, hreq.URL.RawQuery)
		p.index[key] = span{off: p.size, n: fw.n, contentType: fw.h.Get("Content-Type")}
		p.slots = append(p.slots, renderedSlot{key: key, poll: req.Start})
		p.size += fw.n
	}
	if err := fw.w.Flush(); err != nil {
		return fmt.Errorf("writing the file of rendered responses: %w", err)
	}
	e.pre = p
	return nil
}

// serve answers req from the file if its key is indexed and it is signed as the worker signs
// it, and reports whether it did; a request it does not answer is counted as missed and must
// go to the live fake.
func (p *prerendered) serveHTTP(w http.ResponseWriter, req *http.Request) bool {
	sp, ok := p.index[requestKey(req.URL.Path, req.URL.RawQuery)]
	if !ok || req.Method != http.MethodGet || !signedByWorker(req) {
		p.missed.Add(1)
		return false
	}
	f, err := os.Open(p.path)
	if err != nil {
		p.missed.Add(1)
		return false
	}
	defer f.Close()
	if _, err := f.Seek(sp.off, io.SeekStart); err != nil {
		p.missed.Add(1)
		return false
	}
	p.served.Add(1)
	h := w.Header()
	h.Set("Content-Type", sp.contentType)
	h.Set("Content-Length", strconv.FormatInt(sp.n, 10))
	w.WriteHeader(http.StatusOK)
	// The ResponseWriter's ReadFrom hands a LimitedReader over an *os.File to the connection,
	// which sends it with sendfile: the bytes do not pass through this process's memory.
	if rf, ok := w.(io.ReaderFrom); ok {
		_, _ = rf.ReadFrom(&io.LimitedReader{R: f, N: sp.n})
	} else {
		_, _ = io.Copy(w, &io.LimitedReader{R: f, N: sp.n})
	}
	return true
}

// result returns what the run's requests got.
func (p *prerendered) result() *PreRendered {
	return &PreRendered{Served: p.served.Load(), Missed: p.missed.Load(), Bytes: p.size}
}

// body reads slot i's response from the file into buf (grown as needed) and returns it.
func (p *prerendered) body(f *os.File, i int, buf []byte) ([]byte, error) {
	sp := p.index[p.slots[i].key]
	if int64(cap(buf)) < sp.n {
		buf = make([]byte, sp.n)
	}
	buf = buf[:sp.n]
	if _, err := f.ReadAt(buf, sp.off); err != nil {
		return nil, fmt.Errorf("reading slot %d's response from %s: %w", i, p.path, err)
	}
	return buf, nil
}

// signedByWorker reports whether req carries the signature the bench's workers compute with
// the fake's default tokens, which the fake appliance checks before answering.
func signedByWorker(req *http.Request) bool {
	date := req.Header.Get("DTAPI-Date")
	apiRequest := req.URL.Path
	if req.URL.RawQuery != "" {
		apiRequest += "?" + req.URL.RawQuery
	}
	return req.Header.Get("DTAPI-Token") == darktracetest.DefaultPublicToken &&
		req.Header.Get("DTAPI-Signature") == darktrace.Sign(darktracetest.DefaultPrivateToken, darktracetest.DefaultPublicToken, apiRequest, date)
}

// signedRequest returns the HTTP request the worker's client sends for req, signed as it signs.
func signedRequest(req darktrace.Request) (*http.Request, error) {
	path, query, err := req.PathAndQuery()
	if err != nil {
		return nil, err
	}
	apiRequest := path + "?" + query
	hreq := httptest.NewRequest(http.MethodGet, "http://appliance"+apiRequest, nil)
	date := time.Now().UTC().Format(darktrace.DateLayout)
	hreq.Header.Set("DTAPI-Token", darktracetest.DefaultPublicToken)
	hreq.Header.Set("DTAPI-Date", date)
	hreq.Header.Set("DTAPI-Signature", darktrace.Sign(darktracetest.DefaultPrivateToken, darktracetest.DefaultPublicToken, apiRequest, date))
	return hreq, nil
}

// fileResponse is a ResponseWriter that writes the body to a file and counts its bytes.
type fileResponse struct {
	h    http.Header
	code int
	w    *bufio.Writer
	n    int64
}

func (r *fileResponse) reset() { r.h, r.code, r.n = http.Header{}, 0, 0 }

func (r *fileResponse) Header() http.Header { return r.h }

func (r *fileResponse) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
}

func (r *fileResponse) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	n, err := r.w.Write(b)
	r.n += int64(n)
	return n, err
}
