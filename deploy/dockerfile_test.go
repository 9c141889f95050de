package deploy

import (
	"bytes"
	"debug/elf"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/amarula/amarula/node"
)

const repoRoot = ".."

// instruction is one Dockerfile instruction with continuations joined.
type instruction struct {
	line int
	cmd  string // upper case
	args string
}

type stage struct {
	base, name string
	ins        []instruction
}

// parseDockerfile splits a Dockerfile into stages of instructions
// (comments and parser directives dropped, "\" continuations joined).
func parseDockerfile(src string) ([]stage, error) {
	var stages []stage
	var cur strings.Builder
	start := 0
	flush := func() error {
		text := strings.TrimSpace(cur.String())
		cur.Reset()
		if text == "" {
			return nil
		}
		cmd, args, _ := strings.Cut(text, " ")
		in := instruction{line: start, cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		if in.cmd == "FROM" {
			f := strings.Fields(in.args)
			st := stage{base: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.name = f[2]
			}
			stages = append(stages, st)
			return nil
		}
		if len(stages) == 0 {
			return &parseError{in.line, in.cmd + " before FROM"}
		}
		stages[len(stages)-1].ins = append(stages[len(stages)-1].ins, in)
		return nil
	}
	for i, line := range strings.Split(src, "\n") {
		t := strings.TrimSpace(line)
		if strings.HasPrefix(t, "#") || (t == "" && cur.Len() == 0) {
			continue
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if strings.HasSuffix(t, "\\") {
			cur.WriteString(strings.TrimSuffix(t, "\\") + " ")
			continue
		}
		cur.WriteString(t)
		if err := flush(); err != nil {
			return nil, err
		}
	}
	return stages, flush()
}

type parseError struct {
	line int
	msg  string
}

func (e *parseError) Error() string { return "Dockerfile:" + strconv.Itoa(e.line) + ": " + e.msg }

// checkDockerfile returns what is wrong with a Dockerfile for the node.
func checkDockerfile(src, goVersion string, settings map[string]bool) []string {
	var probs []string
	add := func(s string) { probs = append(probs, s) }
	stages, err := parseDockerfile(src)
	if err != nil {
		return []string{err.Error()}
	}
	if len(stages) < 2 {
		return []string{"want a multi-stage build (a Go builder and a minimal final stage)"}
	}
	build, final := stages[0], stages[len(stages)-1]

	if want := "golang:" + goVersion; build.base != want && !strings.HasPrefix(build.base, want+"-") && !strings.HasPrefix(build.base, want+"@") {
		add("builder FROM " + build.base + ", want " + want + " (the go directive of go.mod)")
	}
	builds := false
	for _, in := range build.ins {
		if in.cmd == "RUN" && strings.Contains(in.args, "go build") {
			builds = true
			if !strings.Contains(in.args, "CGO_ENABLED=0") {
				add("the go build does not set CGO_ENABLED=0: the final image has no libc")
			}
			if !regexp.MustCompile(`\./cmd/node\b`).MatchString(in.args) {
				add("the go build does not build ./cmd/node")
			}
		}
	}
	if !builds {
		add("the builder stage runs no go build")
	}

	distroless := regexp.MustCompile(`^gcr\.io/distroless/static(-debian\d+)?:(nonroot|latest-nonroot|debug-nonroot)(@sha256:[0-9a-f]{64})?$`)
	if final.base != "scratch" && !distroless.MatchString(final.base) {
		add("final FROM " + final.base + ": want scratch or distroless static :nonroot")
	}
	user := ""
	var exposed []string
	var entrypoint []string
	copied := map[string]bool{}
	for _, in := range final.ins {
		switch in.cmd {
		case "USER":
			user = in.args
		case "EXPOSE":
			exposed = append(exposed, strings.Fields(in.args)...)
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(in.args), &entrypoint); err != nil {
				add("ENTRYPOINT must be exec form (a JSON array) so the node gets SIGTERM directly: " + in.args)
			}
		case "COPY":
			f := strings.Fields(in.args)
			copied[f[len(f)-1]] = true
		case "ENV":
			for _, kv := range regexp.MustCompile(`(\w+)=`).FindAllStringSubmatch(in.args, -1) {
				if strings.HasPrefix(kv[1], "AMARULA_") && !settings[kv[1]] {
					add("ENV " + kv[1] + " is not a setting the node reads")
				}
			}
		case "ADD":
			if strings.Contains(in.args, "://") {
				add("ADD of a URL: builds must not download from elsewhere")
			}
		case "RUN":
			if final.base == "scratch" || distroless.MatchString(final.base) {
				add("RUN in the final stage: it has no shell")
			}
		}
	}
	uid, _, _ := strings.Cut(user, ":")
	if uid == "" || uid == "0" || uid == "root" {
		add("the final stage must set a non-root USER (got " + strings.TrimSpace(user+" ") + ")")
	}
	if len(entrypoint) == 0 || !copied[entrypoint[0]] {
		add("ENTRYPOINT " + strings.Join(entrypoint, " ") + " is not a file the final stage copies in")
	}
	def := node.DefaultConfig()
	for _, want := range []string{portOf(def.Listen) + "/tcp", portOf(def.GossipBind) + "/tcp", portOf(def.GossipBind) + "/udp"} {
		if !slices.Contains(exposed, want) && !(strings.HasSuffix(want, "/tcp") && slices.Contains(exposed, strings.TrimSuffix(want, "/tcp"))) {
			add("EXPOSE lacks " + want + " (the node's default listen/gossip ports)")
		}
	}
	return probs
}

func portOf(hostport string) string {
	_, p, _ := net.SplitHostPort(hostport)
	return p
}

func goDirective(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(b)
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	return string(m[1])
}

func TestDockerfile(t *testing.T) {
	src, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	settings, err := NodeSettings()
	if err != nil {
		t.Fatal(err)
	}
	goVersion := goDirective(t)
	for _, p := range checkDockerfile(string(src), goVersion, settings) {
		t.Error(p)
	}

	// Each mistake must be caught.
	for _, tc := range []struct{ name, old, new, want string }{
		{"root user", "USER 65532:65532", "USER root", "non-root USER"},
		{"no user", "USER 65532:65532\n", "", "non-root USER"},
		{"cgo", "RUN CGO_ENABLED=0 GOOS", "RUN GOOS", "CGO_ENABLED=0"},
		{"full base image", "gcr.io/distroless/static-debian12:nonroot", "debian:12", "want scratch or distroless"},
		{"distroless as root", "gcr.io/distroless/static-debian12:nonroot", "gcr.io/distroless/static-debian12:latest", "want scratch or distroless"},
		{"old go", "golang:" + goVersion, "golang:1.20", "the go directive"},
		{"wrong package", "./cmd/node", "./cmd/wasim", "does not build ./cmd/node"},
		{"no udp gossip", "7946/udp", "", "7946/udp"},
		{"shell entrypoint", `ENTRYPOINT ["/usr/local/bin/amarula-node"]`, `ENTRYPOINT /usr/local/bin/amarula-node`, "exec form"},
		{"entrypoint elsewhere", `ENTRYPOINT ["/usr/local/bin/amarula-node"]`, `ENTRYPOINT ["/amarula-node"]`, "is not a file"},
		{"unknown setting", "AMARULA_LOG_FORMAT=json", "AMARULA_LOGFORMAT=json", "AMARULA_LOGFORMAT is not a setting"},
		{"single stage", "FROM gcr.io/distroless/static-debian12:nonroot\n", "", "multi-stage"},
		{"instruction before FROM", "FROM golang:" + goVersion + " AS build\n", "", "WORKDIR before FROM"},
	} {
		if !strings.Contains(string(src), tc.old) {
			t.Errorf("%s: the Dockerfile no longer contains %q: stale case", tc.name, tc.old)
			continue
		}
		probs := checkDockerfile(strings.Replace(string(src), tc.old, tc.new, 1), goVersion, settings)
		if !slices.ContainsFunc(probs, func(p string) bool { return strings.Contains(p, tc.want) }) {
			t.Errorf("%s: no problem mentions %q: %v", tc.name, tc.want, probs)
		}
	}
}

// TestNodeBuildsWithoutCgo builds ./cmd/node as the Dockerfile does and
// checks that the binary is static (it runs on distroless/static, which has
// no libc) and that no package of the node relies on cgo.
func TestNodeBuildsWithoutCgo(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatal("go not on PATH: the test needs the toolchain that runs it")
	}
	env := append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	out := filepath.Join(t.TempDir(), "amarula-node")
	cmd := exec.Command(goBin, "build", "-trimpath", "-ldflags=-s -w", "-o", out, "./cmd/node")
	cmd.Dir, cmd.Env = repoRoot, env
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build ./cmd/node: %v\n%s", err, b)
	}
	f, err := elf.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary asks for a dynamic loader: not static")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("the binary links shared libraries: %v", libs)
	}

	// With cgo available (the default build), which non-standard packages
	// of the node would compile C? Those would behave differently (or not
	// at all, like go-sqlite3) in the CGO_ENABLED=0 image.
	list := exec.Command(goBin, "list", "-deps", "-f", `{{if and .CgoFiles (not .Standard)}}{{.ImportPath}}{{end}}`, "./cmd/node")
	list.Dir = repoRoot
	list.Env = append(os.Environ(), "CGO_ENABLED=1")
	b, err := list.CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, b)
	}
	if cgo := strings.Fields(string(b)); len(cgo) > 0 {
		t.Errorf("the node depends on cgo packages %v: they do not work in the static image", cgo)
	}

	// The static binary runs and lists its settings.
	help, err := exec.Command(out, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("amarula-node --help: %v\n%s", err, help)
	}
	if !bytes.Contains(help, []byte("AMARULA_LISTEN")) {
		t.Errorf("amarula-node --help does not list AMARULA_LISTEN:\n%s", help)
	}
}
