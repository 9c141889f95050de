package s3

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// Local is the Objects implementation over a directory, used when no S3 is
// configured (single node, development).
//
// Layout: key "a/b/c" lives in directory <dir>/a.d/b.d/ as a sidecar
// "c.meta" (JSON: content type, size, sha256, blob name) and a blob
// "c~<random>". The sidecar is the commit point: a Put writes a new blob,
// then atomically renames a new sidecar over the old one, then removes the
// old blob. A crash at any point leaves either the old object or the new
// one, never a mix (at worst an orphan blob, swept by the next Put of that
// key). The suffixes keep every name distinct: directories end in ".d",
// sidecars in ".meta", blobs contain '~' (not allowed in keys), temporary
// files start with '.' (not allowed at the start of a segment), so "a" and
// "a/b" can coexist as they do on S3.
type Local struct {
	dir   string
	locks [64]sync.RWMutex // striped by key: commit vs open of one key
}

var _ Objects = (*Local)(nil)

const (
	dirSuffix  = ".d"
	metaSuffix = ".meta"
	blobSep    = "~"
	tmpPrefix  = ".tmp-"
)

// sidecar is the JSON of a ".meta" file.
type sidecar struct {
	Key         string    `json:"key"`
	Size        int64     `json:"size"`
	ContentType string    `json:"content_type"`
	SHA256      string    `json:"sha256"`
	Blob        string    `json:"blob"`
	ModTime     time.Time `json:"mod_time"`
}

// NewLocal returns a local store rooted at dir, creating it if needed.
func NewLocal(dir string) (*Local, error) {
	if dir == "" {
		return nil, errors.New("objects: local store needs a directory")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("objects: local dir %s: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o750); err != nil {
		return nil, fmt.Errorf("objects: local dir %s: %w", abs, err)
	}
	return &Local{dir: abs}, nil
}

// paths returns the directory and the base segment of key. key must be valid.
func (l *Local) paths(key string) (dir, base string) {
	segs := strings.Split(key, "/")
	parts := make([]string, 0, len(segs))
	parts = append(parts, l.dir)
	for _, s := range segs[:len(segs)-1] {
		parts = append(parts, s+dirSuffix)
	}
	return filepath.Join(parts...), segs[len(segs)-1]
}

func (l *Local) lock(key string) *sync.RWMutex {
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return &l.locks[h.Sum32()%uint32(len(l.locks))]
}

// Put implements Objects: the bytes stream into a temporary file in the
// key's directory (never into memory), are hashed on the way, and are
// committed by renames only when complete and matching.
func (l *Local) Put(ctx context.Context, key string, r io.Reader, size int64, contentType, sha256hex string) (Info, error) {
	contentType, err := checkPutArgs(key, contentType, sha256hex)
	if err != nil {
		return Info{}, err
	}
	dir, base := l.paths(key)
	tmp, err := createTemp(dir)
	if err != nil {
		return Info{}, fmt.Errorf("local: put %s: %w", key, err)
	}
	committed := false
	defer func() {
		if !committed {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), ctxReader{ctx: ctx, r: r})
	if err != nil {
		return Info{}, fmt.Errorf("local: put %s: write: %w", key, err)
	}
	got := hex.EncodeToString(h.Sum(nil))
	if err := checkPut(key, n, size, got, sha256hex); err != nil {
		return Info{}, err
	}
	if err := tmp.Sync(); err != nil {
		return Info{}, fmt.Errorf("local: put %s: sync: %w", key, err)
	}
	if err := tmp.Close(); err != nil {
		return Info{}, fmt.Errorf("local: put %s: close: %w", key, err)
	}
	sc := sidecar{Key: key, Size: n, ContentType: contentType, SHA256: got, Blob: base + blobSep + randomHex(), ModTime: time.Now().UTC()}
	committed = true
	if err := l.commit(dir, base, tmp.Name(), sc); err != nil {
		return Info{}, fmt.Errorf("local: put %s: %w", key, err)
	}
	return sc.info(), nil
}

// commit moves the finished temporary file to its blob name, writes the
// sidecar atomically and removes the blobs of the key it no longer
// references. All of it runs under the key's lock, so a concurrent Put of
// the same key cannot sweep a blob that is about to be referenced.
func (l *Local) commit(dir, base, tmpName string, sc sidecar) error {
	data, err := json.Marshal(sc)
	if err != nil {
		_ = os.Remove(tmpName)
		return err
	}
	mu := l.lock(sc.Key)
	mu.Lock()
	defer mu.Unlock()
	blob := filepath.Join(dir, sc.Blob)
	if err := os.Rename(tmpName, blob); err != nil {
		_ = os.Remove(tmpName)
		return err
	}
	if err := writeFileAtomic(dir, base+metaSuffix, data); err != nil {
		_ = os.Remove(blob)
		return err
	}
	// Sweep superseded and orphaned blobs of this key only: '~' cannot
	// occur in a key, so the pattern matches no other key's files.
	old, _ := filepath.Glob(filepath.Join(dir, globEscape(base)+blobSep+"*"))
	for _, p := range old {
		if filepath.Base(p) != sc.Blob {
			_ = os.Remove(p)
		}
	}
	return nil
}

// createTemp creates a temporary file in dir, creating dir first. A
// concurrent DeletePrefix may remove a just-emptied dir in between, hence
// the retry.
func createTemp(dir string) (*os.File, error) {
	var err error
	for range 3 {
		if err = os.MkdirAll(dir, 0o750); err != nil {
			return nil, err
		}
		var f *os.File
		if f, err = os.CreateTemp(dir, tmpPrefix+"*"); err == nil {
			return f, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	return nil, err
}

func writeFileAtomic(dir, name string, data []byte) error {
	f, err := os.CreateTemp(dir, tmpPrefix+"*")
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		_ = os.Remove(f.Name())
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		_ = os.Remove(f.Name())
		return err
	}
	if err := f.Close(); err != nil {
		_ = os.Remove(f.Name())
		return err
	}
	if err := os.Rename(f.Name(), filepath.Join(dir, name)); err != nil {
		_ = os.Remove(f.Name())
		return err
	}
	// Make the rename durable.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

// globEscape escapes the glob metacharacters a key segment may hold (none
// today, but the allowed set could grow).
func globEscape(s string) string {
	r := strings.NewReplacer(`*`, `\*`, `?`, `\?`, `[`, `\[`, `\`, `\\`)
	return r.Replace(s)
}

func randomHex() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (sc sidecar) info() Info {
	return Info{Key: sc.Key, Size: sc.Size, ContentType: sc.ContentType, SHA256: sc.SHA256, ModTime: sc.ModTime}
}

func (l *Local) readSidecar(dir, base, key string) (sidecar, error) {
	data, err := os.ReadFile(filepath.Join(dir, base+metaSuffix))
	if errors.Is(err, fs.ErrNotExist) {
		return sidecar{}, fmt.Errorf("local: %s: %w", key, ErrNotFound)
	}
	if err != nil {
		return sidecar{}, fmt.Errorf("local: %s: %w", key, err)
	}
	var sc sidecar
	if err := json.Unmarshal(data, &sc); err != nil || sc.Key != key || sc.Blob == "" {
		return sidecar{}, fmt.Errorf("local: %s: corrupt sidecar: %w", key, ErrNotFound)
	}
	return sc, nil
}

// Get implements Objects.
func (l *Local) Get(ctx context.Context, key string, rng *Range) (io.ReadCloser, Info, error) {
	if err := ValidateKey(key); err != nil {
		return nil, Info{}, err
	}
	if err := ctx.Err(); err != nil {
		return nil, Info{}, err
	}
	dir, base := l.paths(key)
	mu := l.lock(key)
	mu.RLock()
	sc, err := l.readSidecar(dir, base, key)
	var f *os.File
	if err == nil {
		// Opened under the lock: a concurrent Put may unlink the blob
		// afterwards, the open file stays readable.
		f, err = os.Open(filepath.Join(dir, sc.Blob))
		if errors.Is(err, fs.ErrNotExist) {
			err = fmt.Errorf("local: get %s: blob missing: %w", key, ErrNotFound)
		}
	}
	mu.RUnlock()
	if err != nil {
		return nil, Info{}, err
	}
	info := sc.info()
	if rng == nil {
		return newVerifyReader(f, key, info), info, nil
	}
	if rng.Offset < 0 || rng.Length == 0 || rng.Offset >= info.Size {
		_ = f.Close()
		return nil, Info{}, fmt.Errorf("local: get %s: %w: offset %d length %d of %d", key, ErrInvalidRange, rng.Offset, rng.Length, info.Size)
	}
	n := info.Size - rng.Offset
	if rng.Length > 0 && rng.Length < n {
		n = rng.Length
	}
	return struct {
		io.Reader
		io.Closer
	}{io.NewSectionReader(f, rng.Offset, n), f}, info, nil
}

// Stat implements Objects.
func (l *Local) Stat(ctx context.Context, key string) (Info, error) {
	if err := ValidateKey(key); err != nil {
		return Info{}, err
	}
	if err := ctx.Err(); err != nil {
		return Info{}, err
	}
	dir, base := l.paths(key)
	mu := l.lock(key)
	mu.RLock()
	defer mu.RUnlock()
	sc, err := l.readSidecar(dir, base, key)
	if err != nil {
		return Info{}, err
	}
	return sc.info(), nil
}

// Delete implements Objects.
func (l *Local) Delete(ctx context.Context, key string) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	dir, base := l.paths(key)
	return l.remove(dir, base, key)
}

// remove deletes the sidecar first (the object is gone from then on), then
// every blob of the key.
func (l *Local) remove(dir, base, key string) error {
	mu := l.lock(key)
	mu.Lock()
	defer mu.Unlock()
	if err := os.Remove(filepath.Join(dir, base+metaSuffix)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("local: delete %s: %w", key, err)
	}
	blobs, _ := filepath.Glob(filepath.Join(dir, globEscape(base)+blobSep+"*"))
	for _, p := range blobs {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("local: delete %s: %w", key, err)
		}
	}
	return nil
}

// DeletePrefix implements Objects. It walks only the directory of the
// prefix's complete segments and removes emptied directories.
func (l *Local) DeletePrefix(ctx context.Context, prefix string) (int, error) {
	if err := validatePrefix(prefix); err != nil {
		return 0, err
	}
	segs := strings.Split(prefix, "/")
	start := l.dir
	for _, s := range segs[:len(segs)-1] {
		start = filepath.Join(start, s+dirSuffix)
	}
	var keys []string
	var dirs []string
	err := filepath.WalkDir(start, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.IsDir() {
			if p != start {
				dirs = append(dirs, p)
			}
			return nil
		}
		name := d.Name()
		if !strings.HasSuffix(name, metaSuffix) || strings.HasPrefix(name, ".") {
			return nil
		}
		key, ok := l.keyOf(p)
		if ok && strings.HasPrefix(key, prefix) {
			keys = append(keys, key)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("local: delete prefix %s: %w", prefix, err)
	}
	deleted := 0
	for _, key := range keys {
		dir, base := l.paths(key)
		if err := l.remove(dir, base, key); err != nil {
			return deleted, err
		}
		deleted++
	}
	// Deepest first; a non-empty directory simply stays.
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	for _, d := range dirs {
		_ = os.Remove(d)
	}
	return deleted, nil
}

// keyOf maps a sidecar path back to its key.
func (l *Local) keyOf(metaPath string) (string, bool) {
	rel, err := filepath.Rel(l.dir, metaPath)
	if err != nil {
		return "", false
	}
	parts := strings.Split(filepath.ToSlash(rel), "/")
	for i, p := range parts[:len(parts)-1] {
		if !strings.HasSuffix(p, dirSuffix) {
			return "", false
		}
		parts[i] = strings.TrimSuffix(p, dirSuffix)
	}
	parts[len(parts)-1] = strings.TrimSuffix(parts[len(parts)-1], metaSuffix)
	key := strings.Join(parts, "/")
	return key, ValidateKey(key) == nil
}

// PresignGet implements Objects: the local store has no URL to hand out;
// callers stream through Get instead.
func (l *Local) PresignGet(ctx context.Context, key string, ttl time.Duration) (string, error) {
	return "", fmt.Errorf("local: presign %s: %w", key, ErrNotSupported)
}

// Close implements Objects; the local store holds nothing open between calls.
func (l *Local) Close() error { return nil }
