package bus

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go"
)

// serverLogger adapts the embedded nats-server's logger to slog. The server's warnings and
// errors (a store it cannot write, a client it drops) matter to operators, so they keep their
// level; its notices (the start-up banner, one line per setting) are debug here, since dtfleet
// logs the embedded server's start itself.
type serverLogger struct{ l *slog.Logger }

func (s serverLogger) log(level slog.Level, format string, v ...any) {
	if !s.l.Enabled(context.Background(), level) {
		return
	}
	s.l.Log(context.Background(), level, fmt.Sprintf(format, v...), "component", "nats-server")
}

func (s serverLogger) Noticef(format string, v ...any) { s.log(slog.LevelDebug, format, v...) }
func (s serverLogger) Warnf(format string, v ...any)   { s.log(slog.LevelWarn, format, v...) }
func (s serverLogger) Fatalf(format string, v ...any)  { s.log(slog.LevelError, format, v...) }
func (s serverLogger) Errorf(format string, v ...any)  { s.log(slog.LevelError, format, v...) }
func (s serverLogger) Debugf(format string, v ...any)  { s.log(slog.LevelDebug, format, v...) }
func (s serverLogger) Tracef(format string, v ...any)  { s.log(slog.LevelDebug-4, format, v...) }

// connHandlers log the client connection's disconnects, reconnects and asynchronous errors
// (a slow consumer, a permission violation): nats.go otherwise handles them silently. The URLs
// logged carry no credentials (redactURL).
func connHandlers(logger *slog.Logger) []nats.Option {
	return []nats.Option{
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if err == nil {
				return // a Close or Drain asked for: not worth a warning
			}
			logger.Warn("NATS disconnected; reconnecting", "url", redactURL(nc.ConnectedUrl()), "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			logger.Info("NATS reconnected", "url", redactURL(nc.ConnectedUrl()), "reconnects", nc.Stats().Reconnects)
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			logger.Error("NATS asynchronous error", "subject", subject, "err", err)
		}),
	}
}
