package session

import (
	"context"
	"fmt"
	"log/slog"

	waLog "go.mau.fi/whatsmeow/util/log"
)

// waLogger adapts slog to whatsmeow's logger. whatsmeow logs every XML
// node at debug level (including ciphertexts and contact names), so the
// adapter drops everything below min.
type waLogger struct {
	log *slog.Logger
	min slog.Level
}

func newWALogger(log *slog.Logger, min slog.Level) waLog.Logger {
	return &waLogger{log: log.With("component", "whatsmeow"), min: min}
}

func (l *waLogger) emit(level slog.Level, msg string, args []any) {
	if level < l.min || !l.log.Enabled(context.Background(), level) {
		return
	}
	l.log.Log(context.Background(), level, fmt.Sprintf(msg, args...))
}

func (l *waLogger) Errorf(msg string, args ...any) { l.emit(slog.LevelError, msg, args) }
func (l *waLogger) Warnf(msg string, args ...any)  { l.emit(slog.LevelWarn, msg, args) }
func (l *waLogger) Infof(msg string, args ...any)  { l.emit(slog.LevelInfo, msg, args) }
func (l *waLogger) Debugf(msg string, args ...any) { l.emit(slog.LevelDebug, msg, args) }
func (l *waLogger) Sub(module string) waLog.Logger {
	return &waLogger{log: l.log.With("module", module), min: l.min}
}
