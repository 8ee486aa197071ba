package devo

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// consoleSender writes Devo lines to a writer (the process's stdout by default).
type consoleSender struct {
	w    io.Writer
	host string
	buf  []byte
}

func newConsoleSender(w io.Writer, host string) *consoleSender {
	return &consoleSender{w: w, host: host}
}

func (s *consoleSender) send(ctx context.Context, b *Batch) error {
	for start := 0; start < len(b.Events); {
		if err := ctx.Err(); err != nil {
			return err
		}
		s.buf = s.buf[:0]
		for start < len(b.Events) && len(s.buf) < writeBufferSize {
			ev := &b.Events[start]
			s.buf = AppendLine(s.buf, ev.Time, s.host, b.Tag, ev.Msg)
			start++
		}
		if _, err := s.w.Write(s.buf); err != nil {
			return fmt.Errorf("writing to the console: %w", err)
		}
	}
	if cap(s.buf) > maxScratch {
		s.buf = nil
	}
	return nil
}

func (s *consoleSender) close() error { return nil }

// fileSender appends Devo lines to a file and fsyncs them on every Send. A failed Send truncates
// the file back to where it started, so a retry never leaves a torn line behind.
type fileSender struct {
	path string
	host string
	f    *os.File
	bw   *bufio.Writer
	buf  []byte
}

func newFileSender(path, host string) (*fileSender, error) {
	if path == "" {
		return nil, fmt.Errorf("%w: path is required for a file output", ErrBadConfig)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("creating the directory of file %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("opening file %s: %w", path, err)
	}
	return &fileSender{path: path, host: host, f: f, bw: bufio.NewWriterSize(f, writeBufferSize)}, nil
}

func (s *fileSender) send(ctx context.Context, b *Batch) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	info, err := s.f.Stat()
	if err != nil {
		return fmt.Errorf("inspecting file %s: %w", s.path, err)
	}
	start := info.Size()
	err = s.write(b)
	if err == nil {
		if err = s.f.Sync(); err != nil {
			err = fmt.Errorf("syncing file %s: %w", s.path, err)
		}
	}
	if err != nil {
		s.bw.Reset(s.f)
		if terr := s.f.Truncate(start); terr != nil {
			err = errors.Join(err, fmt.Errorf("truncating file %s back to %d bytes: %w", s.path, start, terr))
		}
		return err
	}
	return nil
}

func (s *fileSender) write(b *Batch) error {
	for i := range b.Events {
		ev := &b.Events[i]
		s.buf = AppendLine(s.buf[:0], ev.Time, s.host, b.Tag, ev.Msg)
		if _, err := s.bw.Write(s.buf); err != nil {
			return fmt.Errorf("writing file %s: %w", s.path, err)
		}
	}
	if cap(s.buf) > maxScratch {
		s.buf = nil
	}
	if err := s.bw.Flush(); err != nil {
		return fmt.Errorf("writing file %s: %w", s.path, err)
	}
	return nil
}

func (s *fileSender) close() error {
	if err := s.f.Close(); err != nil {
		return fmt.Errorf("closing file %s: %w", s.path, err)
	}
	return nil
}
