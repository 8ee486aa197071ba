package devotest

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// Received is one event the fake received.
type Received struct {
	// Listener is the listener that received it: "tls", "relay" or "http".
	Listener string
	// Framing is how it was framed: "lf" (LF-terminated line), "octet" (octet-counted),
	// "gzip" (a line inside a gzip member), "stream" or "event" (HTTP modes).
	Framing string
	// Conn numbers the connection (or HTTP request) that carried it, from 1 in accept order.
	Conn uint64
	// Priority is the syslog PRI, or -1 for HTTP events.
	Priority int
	// Timestamp is the header timestamp as sent (any format); empty for HTTP events.
	Timestamp string
	// Host and Tag are the header's HOSTNAME and TAG (for HTTP, from the URL path).
	Host, Tag string
	// Msg is the message after "TAG: ".
	Msg string
	// Domain is the HTTP domain from the URL path; empty for syslog.
	Domain string
}

// ErrMalformed is wrapped by ParseLine errors and reported for frames the fake cannot parse.
var ErrMalformed = errors.New("malformed syslog line")

// ParseLine parses one syslog line without its framing: "<PRI>TIMESTAMP HOST TAG: MESSAGE". The
// timestamp may be any run of space-separated words ("Jan  1 00:00:00", "2024-05-01 12:34:56.789",
// RFC 3339); HOST and TAG are the two words before the first ": ". A header ending in ':' at the end
// of the line has an empty message. The result's Listener, Framing and Conn are left empty.
func ParseLine(line []byte) (Received, error) {
	f, err := parseFields(line)
	if err != nil {
		return Received{}, err
	}
	return Received{
		Priority:  f.pri,
		Timestamp: string(f.ts),
		Host:      string(f.host),
		Tag:       string(f.tag),
		Msg:       string(f.msg),
	}, nil
}

// lineFields are the parts of a syslog line as ParseLine finds them, slices of the line.
type lineFields struct {
	pri                int
	ts, host, tag, msg []byte
}

// parseFields parses and checks a line as ParseLine does, without copying its parts: the
// connections copy only what they keep.
func parseFields(line []byte) (lineFields, error) {
	bad := func(why string) (lineFields, error) {
		return lineFields{}, fmt.Errorf("%w: %s", ErrMalformed, why)
	}
	if len(line) == 0 || line[0] != '<' {
		return bad("it does not start with '<'")
	}
	gt := bytes.IndexByte(line[:min(len(line), 5)], '>')
	if gt < 2 {
		return bad("no <PRI> of 1 to 3 digits")
	}
	pri := 0
	for _, c := range line[1:gt] {
		if c < '0' || c > '9' {
			return bad("the PRI is not a number")
		}
		pri = pri*10 + int(c-'0')
	}
	if pri > 191 {
		return bad("the PRI is above 191")
	}
	rest := line[gt+1:]
	var header, msg []byte
	if i := bytes.Index(rest, []byte(": ")); i >= 0 {
		header, msg = rest[:i], rest[i+2:]
	} else if len(rest) > 0 && rest[len(rest)-1] == ':' {
		header = rest[:len(rest)-1]
	} else {
		return bad(`no ": " after the tag`)
	}
	header = bytes.TrimRight(header, " ")
	i := bytes.LastIndexByte(header, ' ')
	if i < 0 {
		return bad("no host and tag in the header")
	}
	tag := header[i+1:]
	header = bytes.TrimRight(header[:i], " ")
	j := bytes.LastIndexByte(header, ' ')
	if j < 0 {
		return bad("no timestamp in the header")
	}
	host := header[j+1:]
	ts := bytes.TrimSpace(header[:j])
	if len(ts) == 0 {
		return bad("an empty timestamp")
	}
	return lineFields{pri: pri, ts: ts, host: host, tag: tag, msg: msg}, nil
}

// interned keeps the last string it made, so that a connection whose lines repeat a tag or host
// allocates it once rather than per line.
type interned struct{ s string }

// get returns b as a string, the same one as last time when b has not changed.
func (in *interned) get(b []byte) string {
	if in.s != string(b) { // compared without allocating
		in.s = string(b)
	}
	return in.s
}

// Framings, as reported in Received.Framing.
const (
	FramingLF     = "lf"
	FramingOctet  = "octet"
	FramingGzip   = "gzip"
	FramingStream = "stream"
	FramingEvent  = "event"
)

// errFrameTooLong ends a connection whose frame exceeds the reader's limit.
var errFrameTooLong = errors.New("frame too long")

// frameReader splits a TCP/TLS byte stream into frames, detecting each frame's kind from its
// first byte: '<' (or anything else) an LF-terminated line, a digit followed by more digits and a
// space an octet-counted frame, 1f 8b exactly one gzip member split on LF. NUL, CR and LF
// between frames are skipped.
type frameReader struct {
	br      *bufio.Reader
	maxLine int
	acc     []byte
	gz      *gzip.Reader
	gzbr    *bufio.Reader
	gzacc   []byte
}

func newFrameReader(r io.Reader, maxLine int) *frameReader {
	return &frameReader{br: bufio.NewReaderSize(r, 64<<10), maxLine: maxLine}
}

// buffered is the number of bytes read from the connection and not yet framed: what a server
// that stops now has received and will never process.
func (f *frameReader) buffered() int {
	n := f.br.Buffered()
	if f.gzbr != nil {
		n += f.gzbr.Buffered()
	}
	return n
}

// run reads frames until EOF and calls emit with each line's framing and bytes (without its final
// LF; valid only during the call). emit returns false to stop reading. run returns nil at EOF or
// when emit stopped it, and the read or format error otherwise.
func (f *frameReader) run(emit func(framing string, line []byte) bool) error {
	for {
		p, err := f.br.Peek(1)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		switch c := p[0]; {
		case c == 0 || c == '\n' || c == '\r':
			_, _ = f.br.ReadByte()
			continue
		case c >= '0' && c <= '9':
			if n, digits := f.octetCount(); digits > 0 {
				ok, err := f.octetFrame(n, digits, emit)
				if err != nil || !ok {
					return err
				}
				continue
			}
		case c == 0x1f:
			if p, _ := f.br.Peek(2); len(p) == 2 && p[1] == 0x8b {
				ok, err := f.gzipMember(emit)
				if err != nil || !ok {
					return err
				}
				continue
			}
		}
		line, err := readLine(f.br, &f.acc, f.maxLine)
		if len(line) > 0 && (err == nil || errors.Is(err, io.EOF)) {
			if !emit(FramingLF, line) {
				return nil
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// octetCount peeks at "N " and returns N and the number of digits, or 0 digits when the frame is
// not octet-counted.
func (f *frameReader) octetCount() (n, digits int) {
	for i := 0; i < 10; i++ {
		p, _ := f.br.Peek(i + 1)
		if len(p) < i+1 {
			return 0, 0
		}
		c := p[i]
		switch {
		case c >= '0' && c <= '9':
			continue
		case c == ' ' && i > 0:
			v, err := strconv.Atoi(string(p[:i]))
			if err != nil {
				return 0, 0
			}
			return v, i
		}
		return 0, 0
	}
	return 0, 0
}

// octetFrame reads an octet-counted frame whose count has digits digits.
func (f *frameReader) octetFrame(n, digits int, emit func(string, []byte) bool) (bool, error) {
	if n > f.maxLine {
		return false, fmt.Errorf("%w: an octet-counted frame of %d bytes", errFrameTooLong, n)
	}
	if _, err := f.br.Discard(digits + 1); err != nil {
		return false, err
	}
	if cap(f.acc) < n {
		f.acc = make([]byte, n)
	}
	rec := f.acc[:n]
	if _, err := io.ReadFull(f.br, rec); err != nil {
		return false, fmt.Errorf("reading an octet-counted frame: %w", err)
	}
	rec = bytes.TrimSuffix(rec, []byte{'\n'})
	if len(rec) == 0 {
		return true, nil
	}
	return emit(FramingOctet, rec), nil
}

// gzipMember inflates exactly one gzip member and emits its lines.
func (f *frameReader) gzipMember(emit func(string, []byte) bool) (bool, error) {
	if f.gz == nil {
		gz, err := gzip.NewReader(f.br)
		if err != nil {
			return false, fmt.Errorf("reading a gzip header: %w", err)
		}
		f.gz = gz
		f.gzbr = bufio.NewReaderSize(gz, 64<<10)
	} else {
		if err := f.gz.Reset(f.br); err != nil {
			return false, fmt.Errorf("reading a gzip header: %w", err)
		}
		f.gzbr.Reset(f.gz)
	}
	f.gz.Multistream(false)
	for {
		line, err := readLine(f.gzbr, &f.gzacc, f.maxLine)
		if len(line) > 0 && (err == nil || errors.Is(err, io.EOF)) {
			if !emit(FramingGzip, line) {
				return false, nil
			}
		}
		if errors.Is(err, io.EOF) {
			return true, nil
		}
		if err != nil {
			return false, fmt.Errorf("inflating a gzip member: %w", err)
		}
	}
}

// readLine reads up to and without the next LF. At EOF it returns the partial line with io.EOF.
// acc is scratch space for lines longer than the reader's buffer.
func readLine(br *bufio.Reader, acc *[]byte, maxLine int) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if err == nil {
		return line[:len(line)-1], nil
	}
	if !errors.Is(err, bufio.ErrBufferFull) {
		return line, err
	}
	buf := append((*acc)[:0], line...)
	defer func() { *acc = buf[:0] }()
	for {
		line, err = br.ReadSlice('\n')
		buf = append(buf, line...)
		if len(buf) > maxLine {
			return nil, fmt.Errorf("%w: a line of more than %d bytes", errFrameTooLong, maxLine)
		}
		if err == nil {
			return buf[:len(buf)-1], nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return buf, err
		}
	}
}
