package devotest

import (
	"bytes"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
)

// BenchmarkCountOnlyRelay is the fake's per-line cost with CountOnly (as dtfleet bench's
// backfill runs use it, and with an OnReceive hook as its live runs do) on the plain relay
// listener, so that TLS does not hide it: one connection carrying b.N LF-framed lines of about
// 2 KB.
func BenchmarkCountOnlyRelay(b *testing.B) {
	var got atomic.Int64
	for _, bb := range []struct {
		name string
		opts Options
	}{
		{"counts", Options{RelayAddr: "127.0.0.1:0", CountOnly: true}},
		{"OnReceive", Options{RelayAddr: "127.0.0.1:0", CountOnly: true, OnReceive: func(ev Received) { got.Add(int64(len(ev.Msg))) }}},
	} {
		b.Run(bb.name, func(b *testing.B) { benchmarkRelay(b, bb.opts) })
	}
}

func benchmarkRelay(b *testing.B, opts Options) {
	s := newTestServer(b, opts)
	msg := bytes.Repeat([]byte("x"), 2000)
	var chunk []byte
	const perChunk = 256
	for i := range perChunk {
		chunk = fmt.Appendf(chunk, "<14>2026-12-03 17:00:00.%03d bench-host siem.darktrace.respond.modelbreaches: {\"i\":%d,\"m\":\"%s\"}\n", i, i, msg)
	}
	c, err := net.Dial("tcp", s.RelayAddr())
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(chunk) / perChunk))
	b.ReportAllocs()
	b.ResetTimer()
	sent := 0
	for sent < b.N {
		n := min(perChunk, b.N-sent)
		data := chunk
		if n < perChunk {
			data = chunk[:lineEnd(chunk, n)]
		}
		if _, err := c.Write(data); err != nil {
			b.Fatal(err)
		}
		sent += n
	}
	if err := sendRaw(b, c, nil); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	c.Close()
	if s.Count() != b.N || s.MalformedCount() != 0 || s.Bytes() != int64(b.N)*int64(len(msg)+len(`{"i":,"m":""}`))+digits(b.N) {
		b.Fatalf("the fake counted %d lines (%d malformed) of %d bytes; want %d", s.Count(), s.MalformedCount(), s.Bytes(), b.N)
	}
}

// lineEnd returns the offset just past the nth LF of data.
func lineEnd(data []byte, n int) int {
	off := 0
	for range n {
		off += bytes.IndexByte(data[off:], '\n') + 1
	}
	return off
}

// digits is the number of decimal digits of the line numbers of n lines sent in chunks of 256.
func digits(n int) int64 {
	var d int64
	for i := range n {
		d += int64(len(fmt.Sprint(i % 256)))
	}
	return d
}
