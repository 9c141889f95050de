package webhook

import (
	"fmt"
	"path"
	"regexp"
)

// MaxPatterns bounds the number of event patterns of one webhook.
const MaxPatterns = 64

// patternShape is what an event pattern may look like: dotted lower-case
// words where any word may be (or contain) '*'.
var patternShape = regexp.MustCompile(`^[a-z_*]{1,32}(\.[a-z_*]{1,32}){0,3}$`)

// ValidatePattern reports whether p is an acceptable event pattern such as
// "message.*", "session.connected" or "*".
func ValidatePattern(p string) error {
	if !patternShape.MatchString(p) {
		return fmt.Errorf("event pattern %q must look like \"message.*\" or \"session.connected\"", truncate(p, 40))
	}
	if _, err := path.Match(p, ""); err != nil {
		return fmt.Errorf("event pattern %q: %w", p, err)
	}
	return nil
}

// ValidatePatterns validates every pattern of a webhook configuration.
func ValidatePatterns(ps []string) error {
	if len(ps) > MaxPatterns {
		return fmt.Errorf("at most %d event patterns, got %d", MaxPatterns, len(ps))
	}
	for _, p := range ps {
		if err := ValidatePattern(p); err != nil {
			return err
		}
	}
	return nil
}

// Match reports whether an event of type typ is selected by patterns. An
// empty pattern list selects every event. '*' matches any run of characters
// within one dotted word ("message.*" matches "message.received" but not
// "message" alone); a lone "*" matches every type.
func Match(patterns []string, typ string) bool {
	if len(patterns) == 0 {
		return true
	}
	for _, p := range patterns {
		if p == "*" || p == typ {
			return true
		}
		// Dots are not path separators for path.Match, so "*" would cross
		// them; compare word by word instead.
		if matchWords(p, typ) {
			return true
		}
	}
	return false
}

func matchWords(p, typ string) bool {
	for {
		pw, prest, pmore := cut(p)
		tw, trest, tmore := cut(typ)
		if ok, err := path.Match(pw, tw); err != nil || !ok {
			return false
		}
		if pmore != tmore {
			return false
		}
		if !pmore {
			return true
		}
		p, typ = prest, trest
	}
}

func cut(s string) (word, rest string, more bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == '.' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
