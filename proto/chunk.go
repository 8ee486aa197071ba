package proto

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// AppendChunk appends c's msgpack encoding to dst and returns the extended buffer. It writes the
// same map Encode writes (keys v, id, seq, i, ev; each event k, t, d and m when set), without
// reflection and without copying the events more than once, so Decode and DecodeChunk read it.
func AppendChunk(dst []byte, c *Chunk) []byte {
	dst = appendArrayLen(appendChunkHeader(dst, c), len(c.Events))
	for i := range c.Events {
		dst = appendEvent(dst, &c.Events[i])
	}
	return dst
}

// appendChunkHeader appends the chunk map's header and its members before the events, up to the
// "ev" key.
func appendChunkHeader(dst []byte, c *Chunk) []byte {
	dst = append(dst, 0x85)
	dst = append(dst, 0xa1, 'v')
	dst = appendInt(dst, int64(c.V))
	dst = appendStr(append(dst, 0xa2, 'i', 'd'), c.SlotID)
	dst = appendInt(append(dst, 0xa3, 's', 'e', 'q'), int64(c.Seq))
	dst = appendInt(append(dst, 0xa1, 'i'), int64(c.Index))
	return append(dst, 0xa2, 'e', 'v')
}

func appendEvent(dst []byte, ev *Event) []byte {
	if ev.More {
		dst = append(dst, 0x84)
	} else {
		dst = append(dst, 0x83)
	}
	dst = appendStr(append(dst, 0xa1, 'k'), ev.K)
	dst = appendInt(append(dst, 0xa1, 't'), ev.T)
	dst = appendBin(append(dst, 0xa1, 'd'), ev.D)
	if ev.More {
		dst = append(dst, 0xa1, 'm', 0xc3)
	}
	return dst
}

// ChunkEncoder writes a chunk's encoding event by event: the encoding AppendChunk writes, except
// that the events' array length always takes five bytes (it is written last, when the count is
// known), which every msgpack reader accepts. Each event's data is copied when it is added, so the
// caller may reuse its memory as soon as Add returns; that is what lets a worker keep a slot's
// events in reused blocks instead of one allocation each.
//
// The zero value is not ready: Reset starts each chunk.
type ChunkEncoder struct {
	buf []byte
	at  int // where the events' array length goes
	n   int
}

// Reset starts the encoding of the chunk whose header is c's (its Events are not read) in
// dst[:0], reusing dst's capacity.
func (e *ChunkEncoder) Reset(dst []byte, c *Chunk) {
	dst = appendChunkHeader(dst[:0], c)
	e.at, e.n = len(dst), 0
	e.buf = append(dst, 0xdd, 0, 0, 0, 0)
}

// Add appends ev, copying its data.
func (e *ChunkEncoder) Add(ev *Event) {
	e.buf = appendEvent(e.buf, ev)
	e.n++
}

// Len is the length of the encoding so far.
func (e *ChunkEncoder) Len() int { return len(e.buf) }

// Events is the number of events added since Reset.
func (e *ChunkEncoder) Events() int { return e.n }

// Bytes completes the encoding and returns it. The encoder does not use the buffer again until
// the next Reset, which the caller may give it back to.
func (e *ChunkEncoder) Bytes() []byte {
	binary.BigEndian.PutUint32(e.buf[e.at+1:], uint32(e.n))
	b := e.buf
	e.buf = nil
	return b
}

// ChunkSize returns an upper bound of AppendChunk's output for c.
func ChunkSize(c *Chunk) int {
	n := 64 + len(c.SlotID)
	for i := range c.Events {
		n += 32 + len(c.Events[i].K) + len(c.Events[i].D)
	}
	return n
}

func appendInt(dst []byte, v int64) []byte {
	switch {
	case v >= 0 && v <= 127:
		return append(dst, byte(v))
	case v < 0 && v >= -32:
		return append(dst, byte(v))
	case v >= math.MinInt8 && v <= math.MaxInt8:
		return append(dst, 0xd0, byte(v))
	case v >= math.MinInt16 && v <= math.MaxInt16:
		return binary.BigEndian.AppendUint16(append(dst, 0xd1), uint16(v))
	case v >= math.MinInt32 && v <= math.MaxInt32:
		return binary.BigEndian.AppendUint32(append(dst, 0xd2), uint32(v))
	default:
		return binary.BigEndian.AppendUint64(append(dst, 0xd3), uint64(v))
	}
}

func appendStr(dst []byte, s string) []byte {
	switch n := len(s); {
	case n <= 31:
		dst = append(dst, 0xa0|byte(n))
	case n <= math.MaxUint8:
		dst = append(dst, 0xd9, byte(n))
	case n <= math.MaxUint16:
		dst = binary.BigEndian.AppendUint16(append(dst, 0xda), uint16(n))
	default:
		dst = binary.BigEndian.AppendUint32(append(dst, 0xdb), uint32(n))
	}
	return append(dst, s...)
}

func appendBin(dst []byte, b []byte) []byte {
	switch n := len(b); {
	case n <= math.MaxUint8:
		dst = append(dst, 0xc4, byte(n))
	case n <= math.MaxUint16:
		dst = binary.BigEndian.AppendUint16(append(dst, 0xc5), uint16(n))
	default:
		dst = binary.BigEndian.AppendUint32(append(dst, 0xc6), uint32(n))
	}
	return append(dst, b...)
}

func appendArrayLen(dst []byte, n int) []byte {
	switch {
	case n <= 15:
		return append(dst, 0x90|byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(dst, 0xdc), uint16(n))
	default:
		return binary.BigEndian.AppendUint32(append(dst, 0xdd), uint32(n))
	}
}

// errShort is returned for truncated input.
var errShort = errors.New("truncated msgpack")

// MaxChunkBytes is the largest decoded chunk DecodeChunk and ReadChunk accept. A worker writes
// chunks of at most the NATS server's max payload less 32 KiB, and nats-server refuses a
// max_payload above its max_pending (64 MiB by default), so this bound has a margin over every
// chunk a worker writes, while a corrupt or hostile message that claims more (an S2 block of a few
// bytes can claim 4 GiB) is refused before anything is allocated for it.
const MaxChunkBytes = 64 << 20

// ErrCorruptChunk is wrapped by every DecodeChunk and ReadChunk error about the bytes themselves
// (truncated or malformed msgpack, an S2 block that does not decode to the size it claims, a chunk
// larger than MaxChunkBytes). Reading the same message again cannot fix it: the caller treats the
// chunk as lost (a failed slot), not as a transient error.
var ErrCorruptChunk = errors.New("corrupt chunk")

// maxDepth bounds the nesting of skipped values (unknown keys), so that a message of nested
// arrays cannot exhaust the stack; chunks this build writes nest three levels deep.
const maxDepth = 64

// DecodeChunk decodes a chunk as Decode does, but without reflection, and with each event's D a
// sub-slice of data (no copy): data must stay unchanged while the chunk is used. c.Events' array
// is reused when it has room for the chunk's events, so a caller that decodes into the same
// Chunk again must be done with the previous events. It reads any
// msgpack encoding of a Chunk (AppendChunk's and Encode's), ignoring unknown keys.
//
// Every length the input declares is checked against the bytes that remain before anything is
// allocated for it, so the memory DecodeChunk allocates is proportional to len(data), and data
// larger than MaxChunkBytes is refused. Malformed input is an error wrapping ErrCorruptChunk,
// never a panic.
func DecodeChunk(data []byte, c *Chunk) error {
	if len(data) > MaxChunkBytes {
		return fmt.Errorf("decoding *proto.Chunk: %w: %d bytes, more than %d", ErrCorruptChunk, len(data), MaxChunkBytes)
	}
	d := decoder{b: data, events: c.Events}
	*c = Chunk{}
	if err := d.chunk(c); err != nil {
		return fmt.Errorf("decoding *proto.Chunk: %w: %w", ErrCorruptChunk, err)
	}
	if c.V < 1 || c.V > SchemaVersion {
		return fmt.Errorf("decoding *proto.Chunk: %w %d (this build knows %d)", ErrSchema, c.V, SchemaVersion)
	}
	return nil
}

type decoder struct {
	b     []byte
	pos   int
	depth int // nesting of the value skip is in
	// events is the array of the Chunk decoded into, reused when it is large enough.
	events []Event
}

func (d *decoder) byte1() (byte, error) {
	if d.pos >= len(d.b) {
		return 0, errShort
	}
	c := d.b[d.pos]
	d.pos++
	return c, nil
}

func (d *decoder) take(n int) ([]byte, error) {
	if n < 0 || len(d.b)-d.pos < n {
		return nil, errShort
	}
	p := d.b[d.pos : d.pos+n : d.pos+n]
	d.pos += n
	return p, nil
}

func (d *decoder) uintN(n int) (uint64, error) {
	p, err := d.take(n)
	if err != nil {
		return 0, err
	}
	var v uint64
	for _, c := range p {
		v = v<<8 | uint64(c)
	}
	return v, nil
}

// header reads a map, array, str or bin header and returns its kind and length.
func (d *decoder) header() (kind byte, n int, err error) {
	c, err := d.byte1()
	if err != nil {
		return 0, 0, err
	}
	var v uint64
	switch {
	case c&0xf0 == 0x80:
		return 'm', int(c & 0x0f), nil
	case c&0xf0 == 0x90:
		return 'a', int(c & 0x0f), nil
	case c&0xe0 == 0xa0:
		return 's', int(c & 0x1f), nil
	case c == 0xc0:
		return 'n', 0, nil
	case c == 0xc4 || c == 0xd9:
		v, err = d.uintN(1)
	case c == 0xc5 || c == 0xda || c == 0xdc || c == 0xde:
		v, err = d.uintN(2)
	case c == 0xc6 || c == 0xdb || c == 0xdd || c == 0xdf:
		v, err = d.uintN(4)
	default:
		return 0, 0, fmt.Errorf("unexpected msgpack code 0x%02x", c)
	}
	if err != nil {
		return 0, 0, err
	}
	switch c {
	case 0xc4, 0xc5, 0xc6:
		kind = 'b'
	case 0xd9, 0xda, 0xdb:
		kind = 's'
	case 0xdc, 0xdd:
		kind = 'a'
	default:
		kind = 'm'
	}
	// Every element, key or byte takes at least one byte of input: a longer length is a lie, and
	// refusing it here keeps allocations and loops proportional to the input.
	if v > uint64(len(d.b)-d.pos) {
		return 0, 0, errShort
	}
	return kind, int(v), nil
}

func (d *decoder) bytes() ([]byte, error) {
	kind, n, err := d.header()
	if err != nil {
		return nil, err
	}
	switch kind {
	case 'n':
		return nil, nil
	case 's', 'b':
		return d.take(n)
	}
	return nil, errors.New("expected a string or binary")
}

func (d *decoder) int() (int64, error) {
	c, err := d.byte1()
	if err != nil {
		return 0, err
	}
	switch {
	case c <= 0x7f:
		return int64(c), nil
	case c >= 0xe0:
		return int64(int8(c)), nil
	}
	var v uint64
	switch c {
	case 0xc0:
		return 0, nil
	case 0xcc, 0xd0:
		v, err = d.uintN(1)
	case 0xcd, 0xd1:
		v, err = d.uintN(2)
	case 0xce, 0xd2:
		v, err = d.uintN(4)
	case 0xcf, 0xd3:
		v, err = d.uintN(8)
	default:
		return 0, fmt.Errorf("unexpected msgpack code 0x%02x for an integer", c)
	}
	if err != nil {
		return 0, err
	}
	switch c {
	case 0xd0:
		return int64(int8(v)), nil
	case 0xd1:
		return int64(int16(v)), nil
	case 0xd2:
		return int64(int32(v)), nil
	}
	return int64(v), nil
}

func (d *decoder) bool() (bool, error) {
	c, err := d.byte1()
	if err != nil {
		return false, err
	}
	switch c {
	case 0xc2, 0xc0:
		return false, nil
	case 0xc3:
		return true, nil
	}
	return false, fmt.Errorf("unexpected msgpack code 0x%02x for a bool", c)
}

// skip skips one value of any type.
func (d *decoder) skip() error {
	c, err := d.byte1()
	if err != nil {
		return err
	}
	d.pos--
	switch {
	case c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3:
		d.pos++
		return nil
	case c >= 0xcc && c <= 0xd3:
		_, err := d.int()
		return err
	case c == 0xca:
		_, err := d.take(5)
		return err
	case c == 0xcb:
		_, err := d.take(9)
		return err
	}
	kind, n, err := d.header()
	if err != nil {
		return err
	}
	if kind == 'a' || kind == 'm' {
		if d.depth++; d.depth > maxDepth {
			return fmt.Errorf("values nested more than %d levels deep", maxDepth)
		}
		defer func() { d.depth-- }()
	}
	switch kind {
	case 's', 'b':
		_, err = d.take(n)
		return err
	case 'a':
		for range n {
			if err := d.skip(); err != nil {
				return err
			}
		}
	case 'm':
		for range 2 * n {
			if err := d.skip(); err != nil {
				return err
			}
		}
	}
	return nil
}

func (d *decoder) chunk(c *Chunk) error {
	kind, n, err := d.header()
	if err != nil {
		return err
	}
	if kind != 'm' {
		return errors.New("a chunk is not a map")
	}
	for range n {
		key, err := d.bytes()
		if err != nil {
			return err
		}
		switch string(key) {
		case "v":
			v, err := d.int()
			if err != nil {
				return err
			}
			c.V = int(v)
		case "id":
			b, err := d.bytes()
			if err != nil {
				return err
			}
			c.SlotID = string(b)
		case "seq":
			v, err := d.int()
			if err != nil {
				return err
			}
			c.Seq = uint64(v)
		case "i":
			v, err := d.int()
			if err != nil {
				return err
			}
			c.Index = int(v)
		case "ev":
			kind, m, err := d.header()
			if err != nil {
				return err
			}
			if kind == 'n' {
				c.Events = nil
				continue
			}
			if kind != 'a' {
				return errors.New("chunk events are not an array")
			}
			// Grown as events decode (m is at most the bytes left, but an Event is 56 bytes),
			// so a short message that claims many events allocates little before it fails.
			if cap(d.events) >= m && m > 0 {
				// A reader decoding chunk after chunk into one Chunk reuses its events array.
				clear(d.events[:cap(d.events)])
				c.Events = d.events[:0]
			} else {
				c.Events = make([]Event, 0, min(m, 1024))
			}
			for range m {
				var ev Event
				if err := d.event(&ev); err != nil {
					return err
				}
				c.Events = append(c.Events, ev)
			}
		default:
			if err := d.skip(); err != nil {
				return err
			}
		}
	}
	return nil
}

func (d *decoder) event(ev *Event) error {
	kind, n, err := d.header()
	if err != nil {
		return err
	}
	if kind != 'm' {
		return errors.New("a chunk event is not a map")
	}
	for range n {
		key, err := d.bytes()
		if err != nil {
			return err
		}
		switch string(key) {
		case "k":
			b, err := d.bytes()
			if err != nil {
				return err
			}
			ev.K = string(b)
		case "t":
			if ev.T, err = d.int(); err != nil {
				return err
			}
		case "d":
			if ev.D, err = d.bytes(); err != nil {
				return err
			}
		case "m":
			if ev.More, err = d.bool(); err != nil {
				return err
			}
		default:
			if err := d.skip(); err != nil {
				return err
			}
		}
	}
	return nil
}
