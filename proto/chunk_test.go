package proto

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/klauspost/compress/s2"
)

func testChunks() []Chunk {
	big := bytes.Repeat([]byte("x"), 70000)
	var many []Event
	for i := range 70000 {
		many = append(many, Event{K: "k", T: int64(i), D: []byte("{}")})
	}
	return []Chunk{
		{V: SchemaVersion, SlotID: "s", Seq: 1, Index: 0},
		{V: SchemaVersion, SlotID: strings.Repeat("id", 200), Seq: math.MaxUint32 + 5, Index: 300, Events: []Event{
			{K: "1", T: -1, D: []byte(`{"a":1}`)},
			{K: strings.Repeat("k", 40), T: 1715000000000, D: big, More: true},
			{K: "", T: -200, D: []byte{}},
			{K: "x", T: 127, D: big[:300]},
			{K: "y", T: 128, D: big[:65536]},
			{K: "z", T: -129, D: []byte("1")},
			{K: "w", T: math.MinInt64, D: []byte("2")},
		}},
		{V: SchemaVersion, SlotID: "m", Seq: 70000, Index: 40000, Events: many},
	}
}

// TestAppendChunkRoundTrip checks that the hand-written codec and msgpack read each other's output.
func TestAppendChunkRoundTrip(t *testing.T) {
	for _, c := range testChunks() {
		enc := AppendChunk(nil, &c)
		if len(enc) > ChunkSize(&c) {
			t.Errorf("encoding of %d bytes above ChunkSize %d", len(enc), ChunkSize(&c))
		}
		var viaMsgpack Chunk
		if err := Decode(enc, &viaMsgpack); err != nil {
			t.Fatal(err)
		}
		std, err := Encode(&c)
		if err != nil {
			t.Fatal(err)
		}
		for name, data := range map[string][]byte{"AppendChunk": enc, "Encode": std} {
			var got Chunk
			if err := DecodeChunk(data, &got); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			normalize(&got)
			normalize(&viaMsgpack)
			want := c
			normalize(&want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s: DecodeChunk mismatch", name)
			}
			if !reflect.DeepEqual(viaMsgpack, want) {
				t.Errorf("msgpack Decode of AppendChunk mismatch")
			}
		}
	}
}

// TestChunkEncoder checks that the event-by-event encoding reads back as the chunk, through the
// hand-written decoder and through msgpack, in at most ChunkSize plus the wider array length,
// and that the data added is copied (the caller's buffer is overwritten after each Add).
func TestChunkEncoder(t *testing.T) {
	var e ChunkEncoder
	var buf []byte
	for _, c := range testChunks() {
		e.Reset(buf, &c)
		scratch := make([]byte, 0, 70000)
		for _, ev := range c.Events {
			lent := ev
			lent.D = append(scratch[:0], ev.D...)
			e.Add(&lent)
			for i := range lent.D {
				lent.D[i] = '!'
			}
		}
		if e.Events() != len(c.Events) {
			t.Fatalf("Events() = %d, want %d", e.Events(), len(c.Events))
		}
		enc := e.Bytes()
		if len(enc) > ChunkSize(&c)+4 {
			t.Errorf("encoding of %d bytes above ChunkSize %d plus 4", len(enc), ChunkSize(&c))
		}
		want := c
		normalize(&want)
		var got, lib Chunk
		if err := DecodeChunk(enc, &got); err != nil {
			t.Fatal(err)
		}
		if err := Decode(enc, &lib); err != nil {
			t.Fatal(err)
		}
		normalize(&got)
		normalize(&lib)
		if !reflect.DeepEqual(got, want) || !reflect.DeepEqual(lib, want) {
			t.Errorf("chunk %q: ChunkEncoder's output does not read back as the chunk", c.SlotID)
		}
		buf = enc // reused by the next Reset
	}
}

func normalize(c *Chunk) {
	if len(c.Events) == 0 {
		c.Events = nil
	}
	for i := range c.Events {
		if len(c.Events[i].D) == 0 {
			c.Events[i].D = nil
		}
	}
}

func TestDecodeChunkTruncated(t *testing.T) {
	c := testChunks()[1]
	enc := AppendChunk(nil, &c)
	for _, n := range []int{0, 1, 5, len(enc) / 2, len(enc) - 1} {
		var got Chunk
		if err := DecodeChunk(enc[:n], &got); err == nil {
			t.Errorf("no error for %d of %d bytes", n, len(enc))
		}
	}
}

func BenchmarkChunkCodec(b *testing.B) {
	var evs []Event
	d := bytes.Repeat([]byte("y"), 2048)
	for i := range 480 {
		evs = append(evs, Event{K: "1234567890", T: int64(i), D: d})
	}
	c := Chunk{V: SchemaVersion, SlotID: "slot", Seq: 9, Index: 3, Events: evs}
	b.Run("AppendChunk", func(b *testing.B) {
		buf := make([]byte, 0, ChunkSize(&c))
		b.SetBytes(int64(len(evs) * len(d)))
		for b.Loop() {
			buf = AppendChunk(buf[:0], &c)
		}
	})
	b.Run("Encode", func(b *testing.B) {
		b.SetBytes(int64(len(evs) * len(d)))
		for b.Loop() {
			_, _ = Encode(&c)
		}
	})
	enc := AppendChunk(nil, &c)
	b.Run("DecodeChunk", func(b *testing.B) {
		b.SetBytes(int64(len(evs) * len(d)))
		for b.Loop() {
			var got Chunk
			_ = DecodeChunk(enc, &got)
		}
	})
	b.Run("Decode", func(b *testing.B) {
		b.SetBytes(int64(len(evs) * len(d)))
		for b.Loop() {
			var got Chunk
			_ = Decode(enc, &got)
		}
	})
}

func TestCompressedChunkRoundTrip(t *testing.T) {
	t.Parallel()
	c := &Chunk{V: SchemaVersion, SlotID: "slot", Seq: 4, Index: 1, Events: []Event{
		{K: "a", T: 1, D: []byte(`{"pbid":1,"model":{"name":"Device::Anomalous Connection"}}`)},
		{K: "b", T: 2, D: []byte(`{"pbid":2,"model":{"name":"Device::Anomalous Connection"}}`), More: true},
	}}
	raw := AppendChunk(nil, c)
	for _, tc := range []struct {
		name, encoding string
		data           []byte
	}{
		{"plain", "", raw},
		{"s2", EncodingS2, CompressChunk(nil, raw)},
		{"s2 into a small buffer", EncodingS2, CompressChunk(make([]byte, 3), raw)},
	} {
		var got Chunk
		if err := ReadChunk(tc.data, tc.encoding, &got); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !reflect.DeepEqual(&got, c) {
			t.Errorf("%s: got %+v, want %+v", tc.name, got, c)
		}
	}
	var got Chunk
	if err := ReadChunk(raw, "zstd", &got); !errors.Is(err, ErrSchema) {
		t.Errorf("an unknown encoding: %v, want ErrSchema", err)
	}
	if err := ReadChunk([]byte("not s2"), EncodingS2, &got); err == nil {
		t.Error("a corrupt compressed chunk decoded")
	}
}

// TestReadChunkBufReuse decodes compressed chunks one after the other into one Chunk and one
// buffer, as the shipper does, largest first: each must read exactly as a fresh ReadChunk reads
// it (no event or field left over from the previous chunk), and a buffer large enough must be
// reused rather than replaced.
func TestReadChunkBufReuse(t *testing.T) {
	chunks := testChunks()
	var (
		into Chunk
		buf  []byte
	)
	for _, i := range []int{2, 1, 0, 1, 2} {
		c := chunks[i]
		data := CompressChunk(nil, AppendChunk(nil, &c))
		var want Chunk
		if err := ReadChunk(data, EncodingS2, &want); err != nil {
			t.Fatal(err)
		}
		prev := buf
		var err error
		if buf, err = ReadChunkBuf(buf, data, EncodingS2, &into); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(into, want) {
			t.Errorf("chunk %d read into a used Chunk differs from a fresh read", i)
		}
		if n, _ := s2.DecodedLen(data); cap(prev) >= n && &buf[:1][0] != &prev[:1][0] {
			t.Errorf("chunk %d: a buffer of capacity %d for %d bytes was not reused", i, cap(prev), n)
		}
	}
	// An uncompressed body needs no buffer: the events point into it.
	plain := AppendChunk(nil, &chunks[1])
	got, err := ReadChunkBuf(buf, plain, "", &into)
	if err != nil || got != nil {
		t.Errorf("ReadChunkBuf of a plain body = %d-byte buffer, %v; want nil, nil", len(got), err)
	}
}

// BenchmarkReadChunk reads a compressed chunk of 500 2 KB events with a new buffer each time
// (ReadChunk) and with a reused one (ReadChunkBuf into the same Chunk), as the shipper does.
func BenchmarkReadChunk(b *testing.B) {
	d := bytes.Repeat([]byte(`{"pbid":12345,"model":{"name":"Anomalous Connection::Data Sent"}},`), 32)
	c := Chunk{V: SchemaVersion, SlotID: "slot", Seq: 7}
	for i := range 500 {
		c.Events = append(c.Events, Event{K: "mb:" + string(rune('a'+i%26)), T: int64(i), D: d})
	}
	data := CompressChunk(nil, AppendChunk(nil, &c))
	b.Run("new", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			var ch Chunk
			if err := ReadChunk(data, EncodingS2, &ch); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("reused", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(data)))
		var (
			ch  Chunk
			buf []byte
			err error
		)
		for b.Loop() {
			if buf, err = ReadChunkBuf(buf, data, EncodingS2, &ch); err != nil {
				b.Fatal(err)
			}
		}
	})
}
