package devotest

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// serveHTTP implements Devo's HTTP ingestion endpoint:
// /event/<domain>/token!<token>/<host>/<tag>?<message> (GET or POST, 204) and
// /stream/<domain>/token!<token>/<host>/<tag> (POST, one event per line, optionally gzip, 200).
// It answers only after reading the whole body; a body over MaxHTTPBody gets 413.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	id := s.connSeq.Add(1)
	if s.refuse.Load() {
		http.Error(w, "service unavailable", http.StatusServiceUnavailable)
		return
	}
	if !s.waitStall() {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	mode, domain, token, host, tag, err := splitIngestionPath(r.URL.EscapedPath())
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	if s.opts.HTTPToken != "" && token != s.opts.HTTPToken {
		http.Error(w, "invalid token", http.StatusUnauthorized)
		return
	}
	base := Received{Listener: "http", Conn: id, Priority: -1, Host: host, Tag: tag, Domain: domain}
	switch mode {
	case "event":
		if r.Method != http.MethodGet && r.Method != http.MethodPost {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		if _, err := io.Copy(io.Discard, http.MaxBytesReader(w, r.Body, s.opts.MaxHTTPBody)); err != nil {
			http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
			return
		}
		msg, err := url.QueryUnescape(r.URL.RawQuery)
		if err != nil {
			http.Error(w, "bad message encoding", http.StatusBadRequest)
			return
		}
		base.Framing, base.Msg = FramingEvent, msg
		if s.record(base, len(base.Msg)) {
			s.abort()
		}
		s.flushFiles()
		w.WriteHeader(http.StatusNoContent)
	case "stream":
		if r.Method != http.MethodPost {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		s.serveStream(w, r, base)
	}
}

// serveStream reads a stream-mode body and records one event per non-empty line.
func (s *Server) serveStream(w http.ResponseWriter, r *http.Request, base Received) {
	if r.ContentLength > s.opts.MaxHTTPBody {
		http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.opts.MaxHTTPBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "reading the body failed", http.StatusBadRequest)
		return
	}
	if strings.EqualFold(strings.TrimSpace(r.Header.Get("Content-Encoding")), "gzip") {
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			http.Error(w, "bad gzip body", http.StatusBadRequest)
			return
		}
		// Cap the inflated size so that a small body cannot exhaust memory.
		body, err = io.ReadAll(io.LimitReader(zr, 8*s.opts.MaxHTTPBody+1))
		if err != nil {
			http.Error(w, "bad gzip body", http.StatusBadRequest)
			return
		}
		if int64(len(body)) > 8*s.opts.MaxHTTPBody {
			http.Error(w, "inflated body too large", http.StatusRequestEntityTooLarge)
			return
		}
	}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(nil, len(body)+1)
	for sc.Scan() {
		line := strings.TrimSuffix(sc.Text(), "\r")
		if line == "" {
			continue
		}
		e := base
		e.Framing, e.Msg = FramingStream, line
		if s.record(e, len(e.Msg)) {
			s.flushFiles()
			s.abort()
		}
	}
	s.flushFiles()
	w.WriteHeader(http.StatusOK)
}

// abort ends the HTTP request without a response (the fault-injected reset).
func (s *Server) abort() {
	panic(http.ErrAbortHandler)
}

// splitIngestionPath splits /<mode>/<domain>/token!<token>/<host>/<tag>.
func splitIngestionPath(escaped string) (mode, domain, token, host, tag string, err error) {
	parts := strings.Split(strings.TrimPrefix(escaped, "/"), "/")
	if len(parts) != 5 {
		return "", "", "", "", "", fmt.Errorf("want /event|stream/<domain>/token!<token>/<host>/<tag>, got %d path segments", len(parts))
	}
	for i, p := range parts {
		if parts[i], err = url.PathUnescape(p); err != nil {
			return "", "", "", "", "", fmt.Errorf("bad path segment %d: %w", i+1, err)
		}
	}
	mode, domain, host, tag = parts[0], parts[1], parts[3], parts[4]
	if mode != "event" && mode != "stream" {
		return "", "", "", "", "", fmt.Errorf("unknown mode %q", mode)
	}
	token, ok := strings.CutPrefix(parts[2], "token!")
	if !ok || token == "" {
		return "", "", "", "", "", errors.New("the third path segment must be token!<token>")
	}
	if domain == "" || host == "" || tag == "" {
		return "", "", "", "", "", errors.New("empty domain, host or tag")
	}
	return mode, domain, token, host, tag, nil
}
