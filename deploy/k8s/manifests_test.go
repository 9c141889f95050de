package k8s

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/amarula/amarula/deploy"
	"github.com/amarula/amarula/node"
)

// nodeImage is the image name the node containers use before kustomize's
// images transformer rewrites it.
const nodeImage = "amarula-node"

// runtimeEnv are variables read by the Go runtime, not by the node's
// configuration, that a node container may set.
var runtimeEnv = map[string]bool{"GOMEMLIMIT": true, "GOMAXPROCS": true, "GODEBUG": true}

// Fake values for the pod fields the node's env refers to, to build the
// environment a node pod would see.
var podFields = map[string]string{
	"metadata.name":      "amarula-0",
	"metadata.namespace": "amarula",
	"status.podIP":       "10.1.2.3",
	"spec.nodeName":      "worker-1",
}

// kustomization is the part of kustomize's Kustomization that these
// manifests use; decoding is strict, so a field outside it fails the test
// (add it here when a manifest starts to need it).
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Resources  []string `json:"resources"`
	Images     []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
		Digest  string `json:"digest,omitempty"`
	} `json:"images,omitempty"`
}

// workload is a StatefulSet or Deployment seen through what the checks need.
type workload struct {
	kind, name, file string
	replicas         int32
	serviceName      string   // StatefulSet only
	claims           []string // StatefulSet volumeClaimTemplates names
	recreate         bool     // Deployment strategy Recreate
	selector         *metav1.LabelSelector
	template         corev1.PodTemplateSpec
}

// bundle is the content of one kustomization directory.
type bundle struct {
	dir          string // relative to deploy/k8s, "." for the root
	kust         kustomization
	configMaps   map[string]*corev1.ConfigMap
	secrets      map[string]*corev1.Secret
	services     map[string]*corev1.Service
	accounts     map[string]*corev1.ServiceAccount
	pvcs         map[string]*corev1.PersistentVolumeClaim
	pdbs         map[string]*policyv1.PodDisruptionBudget
	workloads    []*workload
	objectsCount int
}

// problems collects what is wrong; checks keep going after one.
type problems []string

func (p *problems) add(format string, a ...any) { *p = append(*p, fmt.Sprintf(format, a...)) }

// nodeSettings returns the AMARULA_* names the node reads (its --help).
func nodeSettings(t testing.TB) map[string]bool {
	t.Helper()
	names, err := deploy.NodeSettings()
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// routeSources is the Go source (non-test) of the packages that serve the
// node's HTTP endpoints, to check that probe paths exist.
func routeSources(t testing.TB) string {
	t.Helper()
	var sb strings.Builder
	for _, dir := range []string{"../../node", "../../api"} {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			sb.Write(b)
		}
	}
	return sb.String()
}

// manifestFS is deploy/k8s as a map, so subtests can mutate a copy.
func manifestFS(t testing.TB) fstest.MapFS {
	t.Helper()
	m := fstest.MapFS{}
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !(strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		m[filepath.ToSlash(p)] = &fstest.MapFile{Data: b}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(m) < 8 {
		t.Fatalf("found only %d manifest files under deploy/k8s", len(m))
	}
	return m
}

// splitDocs splits a multi-document YAML file on "---" lines.
func splitDocs(b []byte) [][]byte {
	var docs [][]byte
	var cur []string
	flush := func() {
		doc := strings.Join(cur, "\n")
		cur = nil
		for _, l := range strings.Split(doc, "\n") {
			if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, "#") {
				docs = append(docs, []byte(doc))
				return
			}
		}
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.TrimRight(l, " \t\r") == "---" {
			flush()
			continue
		}
		cur = append(cur, l)
	}
	flush()
	return docs
}

// strict decodes one YAML document into obj, rejecting unknown fields,
// duplicate keys and keys that only match a field case-insensitively (which
// encoding/json would accept but the API server rejects).
func strict(doc []byte, obj any) error {
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return err
	}
	var orig any
	if err := yaml.Unmarshal(doc, &orig); err != nil {
		return err
	}
	rt, err := json.Marshal(obj)
	if err != nil {
		return err
	}
	var round any
	if err := json.Unmarshal(rt, &round); err != nil {
		return err
	}
	return caseCheck(orig, round, "")
}

func caseCheck(orig, round any, at string) error {
	switch o := orig.(type) {
	case map[string]any:
		r, ok := round.(map[string]any)
		if !ok {
			return nil
		}
		for k, v := range o {
			if rv, ok := r[k]; ok {
				if err := caseCheck(v, rv, at+"."+k); err != nil {
					return err
				}
				continue
			}
			for rk := range r {
				if strings.EqualFold(rk, k) {
					return fmt.Errorf("field %s%s: did you mean %q? (field names are case-sensitive)", at, "."+k, rk)
				}
			}
		}
	case []any:
		r, ok := round.([]any)
		if !ok || len(r) != len(o) {
			return nil
		}
		for i := range o {
			if err := caseCheck(o[i], r[i], fmt.Sprintf("%s[%d]", at, i)); err != nil {
				return err
			}
		}
	}
	return nil
}

// load parses every manifest of fsys into bundles, one per directory with a
// kustomization.yaml. Parse errors and files outside any kustomization are
// problems.
func load(fsys fs.FS) (map[string]*bundle, problems) {
	var probs problems
	bundles := map[string]*bundle{}
	var files []string
	_ = fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	sort.Strings(files)
	for _, p := range files {
		if path.Base(p) != "kustomization.yaml" {
			continue
		}
		b, _ := fs.ReadFile(fsys, p)
		bd := &bundle{
			dir:        path.Dir(p),
			configMaps: map[string]*corev1.ConfigMap{},
			secrets:    map[string]*corev1.Secret{},
			services:   map[string]*corev1.Service{},
			accounts:   map[string]*corev1.ServiceAccount{},
			pvcs:       map[string]*corev1.PersistentVolumeClaim{},
			pdbs:       map[string]*policyv1.PodDisruptionBudget{},
		}
		if err := strict(b, &bd.kust); err != nil {
			probs.add("%s: %v", p, err)
			continue
		}
		if bd.kust.APIVersion != "kustomize.config.k8s.io/v1beta1" || bd.kust.Kind != "Kustomization" {
			probs.add("%s: want apiVersion kustomize.config.k8s.io/v1beta1, kind Kustomization; got %s %s", p, bd.kust.APIVersion, bd.kust.Kind)
		}
		bundles[bd.dir] = bd
	}
	listed := map[string]bool{}
	for _, bd := range bundles {
		for _, r := range bd.kust.Resources {
			rp := path.Join(bd.dir, r)
			if listed[rp] {
				probs.add("%s: resource %s listed twice", path.Join(bd.dir, "kustomization.yaml"), r)
			}
			listed[rp] = true
			b, err := fs.ReadFile(fsys, rp)
			if err != nil {
				probs.add("%s: resource %s: %v", path.Join(bd.dir, "kustomization.yaml"), r, err)
				continue
			}
			decodeFile(bd, rp, b, &probs)
		}
	}
	for _, p := range files {
		if path.Base(p) != "kustomization.yaml" && !listed[p] {
			probs.add("%s: not listed in the resources of any kustomization.yaml", p)
		}
	}
	return bundles, probs
}

func decodeFile(bd *bundle, file string, b []byte, probs *problems) {
	docs := splitDocs(b)
	if len(docs) == 0 {
		probs.add("%s: no object", file)
	}
	for i, doc := range docs {
		where := fmt.Sprintf("%s#%d", file, i)
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			probs.add("%s: %v", where, err)
			continue
		}
		var obj interface{ GetName() string }
		var register func()
		switch tm.APIVersion + "/" + tm.Kind {
		case "v1/ConfigMap":
			o := &corev1.ConfigMap{}
			obj = o
			register = func() { bd.configMaps[o.Name] = o }
		case "v1/Secret":
			o := &corev1.Secret{}
			obj = o
			register = func() { bd.secrets[o.Name] = o }
		case "v1/Service":
			o := &corev1.Service{}
			obj = o
			register = func() { bd.services[o.Name] = o }
		case "v1/ServiceAccount":
			o := &corev1.ServiceAccount{}
			obj = o
			register = func() { bd.accounts[o.Name] = o }
		case "v1/PersistentVolumeClaim":
			o := &corev1.PersistentVolumeClaim{}
			obj = o
			register = func() { bd.pvcs[o.Name] = o }
		case "policy/v1/PodDisruptionBudget":
			o := &policyv1.PodDisruptionBudget{}
			obj = o
			register = func() { bd.pdbs[o.Name] = o }
		case "apps/v1/StatefulSet":
			o := &appsv1.StatefulSet{}
			obj = o
			register = func() {
				w := &workload{kind: "StatefulSet", name: o.Name, file: file,
					replicas: deref(o.Spec.Replicas, 1), serviceName: o.Spec.ServiceName, selector: o.Spec.Selector, template: o.Spec.Template}
				for _, ct := range o.Spec.VolumeClaimTemplates {
					w.claims = append(w.claims, ct.Name)
				}
				bd.workloads = append(bd.workloads, w)
			}
		case "apps/v1/Deployment":
			o := &appsv1.Deployment{}
			obj = o
			register = func() {
				bd.workloads = append(bd.workloads, &workload{kind: "Deployment", name: o.Name, file: file,
					replicas: deref(o.Spec.Replicas, 1), selector: o.Spec.Selector, template: o.Spec.Template,
					recreate: o.Spec.Strategy.Type == appsv1.RecreateDeploymentStrategyType})
			}
		default:
			probs.add("%s: kind %s %q is not one this test knows; add its type to decodeFile", where, tm.APIVersion, tm.Kind)
			continue
		}
		if err := strict(doc, obj); err != nil {
			probs.add("%s: %v", where, err)
			continue
		}
		if obj.GetName() == "" {
			probs.add("%s: %s without metadata.name", where, tm.Kind)
			continue
		}
		register()
		bd.objectsCount++
	}
}

func deref[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// check runs every cross-reference check and returns what is wrong.
func check(fsys fs.FS, settings map[string]bool, routes string) problems {
	bundles, probs := load(fsys)
	root := bundles["."]
	if root == nil {
		probs.add("kustomization.yaml: missing in deploy/k8s")
		return probs
	}
	for _, dir := range sortedKeys(bundles) {
		checkBundle(bundles[dir], settings, &probs)
	}
	checkNode(root, bundles["examples"], settings, routes, &probs)
	if ex := bundles["examples"]; ex != nil {
		checkExamples(root, ex, &probs)
	} else {
		probs.add("examples/kustomization.yaml: missing")
	}
	return probs
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// checkBundle checks the references inside one kustomization directory.
func checkBundle(bd *bundle, settings map[string]bool, probs *problems) {
	if bd.objectsCount == 0 {
		probs.add("%s: no objects", bd.dir)
	}
	for _, w := range bd.workloads {
		where := fmt.Sprintf("%s %s/%s", w.file, w.kind, w.name)
		sel, err := metav1.LabelSelectorAsSelector(w.selector)
		if err != nil || w.selector == nil || sel.Empty() {
			probs.add("%s: missing or bad selector: %v", where, err)
		} else if !sel.Matches(labels.Set(w.template.Labels)) {
			probs.add("%s: selector %s does not match its pod template labels %v", where, sel, w.template.Labels)
		}
		if w.kind == "StatefulSet" {
			svc := bd.services[w.serviceName]
			switch {
			case svc == nil:
				probs.add("%s: serviceName %q is not a Service of %s", where, w.serviceName, bd.dir)
			case svc.Spec.ClusterIP != corev1.ClusterIPNone:
				probs.add("%s: serviceName %q is not headless (clusterIP: None)", where, w.serviceName)
			case !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(w.template.Labels)):
				probs.add("%s: its governing Service %q does not select its pods", where, w.serviceName)
			}
		}
		spec := w.template.Spec
		if sa := spec.ServiceAccountName; sa != "" && bd.accounts[sa] == nil {
			probs.add("%s: serviceAccountName %q is not a ServiceAccount of %s", where, sa, bd.dir)
		}
		if pa := spec.Affinity; pa != nil && pa.PodAntiAffinity != nil {
			terms := pa.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution
			for _, wt := range pa.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
				terms = append(terms, wt.PodAffinityTerm)
			}
			for _, term := range terms {
				s, err := metav1.LabelSelectorAsSelector(term.LabelSelector)
				if err != nil || !s.Matches(labels.Set(w.template.Labels)) {
					probs.add("%s: pod anti-affinity selector %v does not match its own pods", where, term.LabelSelector)
				}
				if term.TopologyKey == "" {
					probs.add("%s: pod anti-affinity term without topologyKey", where)
				}
			}
		}
		volumes := map[string]corev1.Volume{}
		for _, v := range spec.Volumes {
			volumes[v.Name] = v
			if v.ConfigMap != nil && bd.configMaps[v.ConfigMap.Name] == nil && !deref(v.ConfigMap.Optional, false) {
				probs.add("%s: volume %s: ConfigMap %q not found", where, v.Name, v.ConfigMap.Name)
			}
			if v.Secret != nil && bd.secrets[v.Secret.SecretName] == nil && !deref(v.Secret.Optional, false) {
				probs.add("%s: volume %s: Secret %q not found", where, v.Name, v.Secret.SecretName)
			}
			if v.PersistentVolumeClaim != nil {
				pvc := bd.pvcs[v.PersistentVolumeClaim.ClaimName]
				switch {
				case pvc == nil:
					probs.add("%s: volume %s: PersistentVolumeClaim %q not found", where, v.Name, v.PersistentVolumeClaim.ClaimName)
				case w.kind == "Deployment" && slices.Contains(pvc.Spec.AccessModes, corev1.ReadWriteOnce) && (!w.recreate || w.replicas > 1):
					probs.add("%s: a ReadWriteOnce volume needs one replica and strategy Recreate (a rolling update would deadlock on it)", where)
				}
			}
		}
		claimTemplates := map[string]bool{}
		for _, name := range w.claims {
			claimTemplates[name] = true
		}
		all := append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...)
		for _, c := range all {
			cw := fmt.Sprintf("%s container %s", where, c.Name)
			for _, m := range c.VolumeMounts {
				if _, ok := volumes[m.Name]; !ok && !claimTemplates[m.Name] {
					probs.add("%s: volumeMount %q names no volume or claim template", cw, m.Name)
				}
			}
			checkEnvRefs(bd, c, cw, settings, probs)
			for _, p := range []struct {
				kind  string
				probe *corev1.Probe
			}{{"readinessProbe", c.ReadinessProbe}, {"livenessProbe", c.LivenessProbe}, {"startupProbe", c.StartupProbe}} {
				if p.probe == nil {
					continue
				}
				if g := p.probe.HTTPGet; g != nil {
					if _, ok := containerPort(c, g.Port, corev1.ProtocolTCP); !ok {
						probs.add("%s: %s port %s is not a TCP port of the container", cw, p.kind, g.Port.String())
					}
					if !strings.HasPrefix(g.Path, "/") {
						probs.add("%s: %s path %q", cw, p.kind, g.Path)
					}
				}
				if s := p.probe.TCPSocket; s != nil {
					if _, ok := containerPort(c, s.Port, corev1.ProtocolTCP); !ok {
						probs.add("%s: %s port %s is not a TCP port of the container", cw, p.kind, s.Port.String())
					}
				}
			}
		}
		for _, c := range spec.Containers {
			if c.ReadinessProbe == nil || c.LivenessProbe == nil {
				probs.add("%s container %s: needs readiness and liveness probes", where, c.Name)
			}
			if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
				probs.add("%s container %s: needs cpu and memory requests and a memory limit", where, c.Name)
			}
		}
		checkSecurity(spec, where, probs)
	}
	for _, name := range sortedKeys(bd.services) {
		svc := bd.services[name]
		where := fmt.Sprintf("%s Service/%s", bd.dir, name)
		if len(svc.Spec.Selector) == 0 {
			probs.add("%s: no selector", where)
			continue
		}
		sel := labels.SelectorFromSet(svc.Spec.Selector)
		var selected []*workload
		for _, w := range bd.workloads {
			if sel.Matches(labels.Set(w.template.Labels)) {
				selected = append(selected, w)
			}
		}
		if len(selected) == 0 {
			probs.add("%s: selector %s selects no pod of %s", where, sel, bd.dir)
			continue
		}
		for _, sp := range svc.Spec.Ports {
			proto := sp.Protocol
			if proto == "" {
				proto = corev1.ProtocolTCP
			}
			target := sp.TargetPort
			if target.Type == intstr.Int && target.IntVal == 0 {
				target = intstr.FromInt32(sp.Port)
			}
			for _, w := range selected {
				found := false
				for _, c := range w.template.Spec.Containers {
					if _, ok := containerPort(c, target, proto); ok {
						found = true
					}
				}
				if !found {
					probs.add("%s: port %s targets %s/%s, which no container of %s %s exposes", where, sp.Name, target.String(), proto, w.kind, w.name)
				}
			}
		}
	}
	for _, name := range sortedKeys(bd.pdbs) {
		pdb := bd.pdbs[name]
		where := fmt.Sprintf("%s PodDisruptionBudget/%s", bd.dir, name)
		sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
		if err != nil || pdb.Spec.Selector == nil || sel.Empty() {
			probs.add("%s: missing or bad selector", where)
			continue
		}
		n := 0
		for _, w := range bd.workloads {
			if sel.Matches(labels.Set(w.template.Labels)) {
				n++
			}
		}
		if n == 0 {
			probs.add("%s: selector %s selects no pod of %s", where, sel, bd.dir)
		}
		if pdb.Spec.MaxUnavailable == nil && pdb.Spec.MinAvailable == nil {
			probs.add("%s: neither maxUnavailable nor minAvailable", where)
		}
	}
}

// containerPort finds the container port a Service targetPort or probe port
// names (by name, or by number and protocol).
func containerPort(c corev1.Container, p intstr.IntOrString, proto corev1.Protocol) (corev1.ContainerPort, bool) {
	for _, cp := range c.Ports {
		cpProto := cp.Protocol
		if cpProto == "" {
			cpProto = corev1.ProtocolTCP
		}
		if cpProto != proto {
			continue
		}
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp, true
		}
	}
	return corev1.ContainerPort{}, false
}

var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// checkEnvRefs checks a container's env: ConfigMap/Secret references exist
// with their keys, $(VAR) references name variables defined before, and
// AMARULA_* names are settings the node reads.
func checkEnvRefs(bd *bundle, c corev1.Container, where string, settings map[string]bool, probs *problems) {
	defined := map[string]bool{}
	for _, ef := range c.EnvFrom {
		switch {
		case ef.ConfigMapRef != nil:
			cm := bd.configMaps[ef.ConfigMapRef.Name]
			if cm == nil {
				probs.add("%s: envFrom ConfigMap %q not found", where, ef.ConfigMapRef.Name)
				continue
			}
			for k := range cm.Data {
				defined[ef.Prefix+k] = true
			}
		case ef.SecretRef != nil:
			s := bd.secrets[ef.SecretRef.Name]
			if s == nil {
				probs.add("%s: envFrom Secret %q not found", where, ef.SecretRef.Name)
				continue
			}
			for k := range secretKeys(s) {
				defined[ef.Prefix+k] = true
			}
		}
	}
	for _, e := range c.Env {
		for _, m := range varRef.FindAllStringSubmatch(e.Value, -1) {
			if !defined[m[1]] {
				probs.add("%s: env %s refers to $(%s), which is not defined before it", where, e.Name, m[1])
			}
		}
		if vf := e.ValueFrom; vf != nil {
			if r := vf.ConfigMapKeyRef; r != nil && !deref(r.Optional, false) {
				if cm := bd.configMaps[r.Name]; cm == nil {
					probs.add("%s: env %s: ConfigMap %q not found", where, e.Name, r.Name)
				} else if _, ok := cm.Data[r.Key]; !ok {
					probs.add("%s: env %s: ConfigMap %q has no key %q", where, e.Name, r.Name, r.Key)
				}
			}
			if r := vf.SecretKeyRef; r != nil && !deref(r.Optional, false) {
				if s := bd.secrets[r.Name]; s == nil {
					probs.add("%s: env %s: Secret %q not found", where, e.Name, r.Name)
				} else if !secretKeys(s)[r.Key] {
					probs.add("%s: env %s: Secret %q has no key %q", where, e.Name, r.Name, r.Key)
				}
			}
			if r := vf.FieldRef; r != nil {
				if _, ok := podFields[r.FieldPath]; !ok {
					probs.add("%s: env %s: fieldRef %q is not one this test knows", where, e.Name, r.FieldPath)
				}
			}
		}
		defined[e.Name] = true
	}
	for _, s := range append(append([]string{}, c.Command...), c.Args...) {
		for _, m := range varRef.FindAllStringSubmatch(s, -1) {
			if !defined[m[1]] {
				probs.add("%s: command/args refer to $(%s), which is not defined", where, m[1])
			}
		}
	}
	// Any AMARULA_* variable, in any container, must be a node setting:
	// a typo would otherwise be ignored silently by the node.
	for name := range defined {
		if strings.HasPrefix(name, "AMARULA_") && !settings[name] {
			probs.add("%s: %s is not a setting the node reads (see amarula-node --help)", where, name)
		}
	}
}

func secretKeys(s *corev1.Secret) map[string]bool {
	keys := map[string]bool{}
	for k := range s.Data {
		keys[k] = true
	}
	for k := range s.StringData {
		keys[k] = true
	}
	return keys
}

func secretValue(s *corev1.Secret, key string) (string, bool) {
	if v, ok := s.StringData[key]; ok {
		return v, true
	}
	v, ok := s.Data[key]
	return string(v), ok
}

// checkSecurity: non-root, no privilege escalation, read-only root fs, no
// capabilities, for every container.
func checkSecurity(spec corev1.PodSpec, where string, probs *problems) {
	podNonRoot := spec.SecurityContext != nil && deref(spec.SecurityContext.RunAsNonRoot, false)
	all := append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...)
	for _, c := range all {
		sc := c.SecurityContext
		cw := fmt.Sprintf("%s container %s", where, c.Name)
		if sc == nil {
			probs.add("%s: no securityContext", cw)
			continue
		}
		if !podNonRoot && !deref(sc.RunAsNonRoot, false) {
			probs.add("%s: runAsNonRoot is not set", cw)
		}
		if deref(sc.AllowPrivilegeEscalation, true) {
			probs.add("%s: allowPrivilegeEscalation must be false", cw)
		}
		if !deref(sc.ReadOnlyRootFilesystem, false) {
			probs.add("%s: readOnlyRootFilesystem must be true", cw)
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			probs.add("%s: capabilities must drop ALL", cw)
		}
	}
}

// nodeWorkload finds the workload running the node image.
func nodeWorkload(bd *bundle) (*workload, *corev1.Container) {
	for _, w := range bd.workloads {
		for i := range w.template.Spec.Containers {
			if c := &w.template.Spec.Containers[i]; c.Image == nodeImage {
				return w, c
			}
		}
	}
	return nil, nil
}

// nodeEnv builds the environment a node pod would see: envFrom, then env in
// order with $(VAR) expansion, pod fields from podFields.
func nodeEnv(bd *bundle, c *corev1.Container) map[string]string {
	env := map[string]string{}
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef != nil && bd.configMaps[ef.ConfigMapRef.Name] != nil {
			for k, v := range bd.configMaps[ef.ConfigMapRef.Name].Data {
				env[ef.Prefix+k] = v
			}
		}
		if ef.SecretRef != nil && bd.secrets[ef.SecretRef.Name] != nil {
			s := bd.secrets[ef.SecretRef.Name]
			for k := range secretKeys(s) {
				env[ef.Prefix+k], _ = secretValue(s, k)
			}
		}
	}
	for _, e := range c.Env {
		v := varRef.ReplaceAllStringFunc(e.Value, func(m string) string {
			if x, ok := env[m[2:len(m)-1]]; ok {
				return x
			}
			return m
		})
		if vf := e.ValueFrom; vf != nil {
			switch {
			case vf.FieldRef != nil:
				v = podFields[vf.FieldRef.FieldPath]
			case vf.SecretKeyRef != nil && bd.secrets[vf.SecretKeyRef.Name] != nil:
				v, _ = secretValue(bd.secrets[vf.SecretKeyRef.Name], vf.SecretKeyRef.Key)
			case vf.ConfigMapKeyRef != nil && bd.configMaps[vf.ConfigMapKeyRef.Name] != nil:
				v = bd.configMaps[vf.ConfigMapKeyRef.Name].Data[vf.ConfigMapKeyRef.Key]
			}
		}
		env[e.Name] = v
	}
	return env
}

// checkNode checks the node workload against what the node itself accepts
// and serves.
func checkNode(root, examples *bundle, settings map[string]bool, routes string, probs *problems) {
	w, c := nodeWorkload(root)
	if w == nil {
		probs.add("deploy/k8s: no workload runs the %s image", nodeImage)
		return
	}
	where := fmt.Sprintf("%s %s/%s", w.file, w.kind, w.name)
	if w.replicas < 3 {
		probs.add("%s: %d replicas, want at least 3", where, w.replicas)
	}
	imageMapped := false
	for _, im := range root.kust.Images {
		imageMapped = imageMapped || im.Name == nodeImage
	}
	if !imageMapped {
		probs.add("kustomization.yaml: images has no entry for %s", nodeImage)
	}

	// Every variable the node container sees is a node setting, a Go
	// runtime variable, or a helper used in another value as $(NAME).
	env := nodeEnv(root, c)
	used := map[string]bool{}
	for _, e := range c.Env {
		for _, m := range varRef.FindAllStringSubmatch(e.Value, -1) {
			used[m[1]] = true
		}
	}
	for _, name := range sortedKeys(env) {
		if !settings[name] && !runtimeEnv[name] && !used[name] {
			probs.add("%s: env %s is neither a node setting nor used by one", where, name)
		}
	}

	// The node must accept this configuration as a pod would see it.
	cfg, err := node.LoadConfig(nil, func(k string) string { return env[k] }, &bytes.Buffer{})
	if err != nil {
		probs.add("%s: the node rejects this configuration: %v", where, err)
		return
	}
	if cfg.SingleNode() {
		probs.add("%s: AMARULA_ETCD_ENDPOINTS is empty: single-node mode cannot run %d replicas", where, w.replicas)
	}

	// Ports: what the node listens on is what the container declares.
	if _, ok := containerPort(*c, intstr.FromInt32(port(cfg.Listen)), corev1.ProtocolTCP); !ok {
		probs.add("%s: AMARULA_LISTEN %s is not a container port", where, cfg.Listen)
	}
	for _, proto := range []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP} {
		if _, ok := containerPort(*c, intstr.FromInt32(port(cfg.GossipBind)), proto); !ok {
			probs.add("%s: gossip port of AMARULA_GOSSIP_BIND %s is not a %s container port", where, cfg.GossipBind, proto)
		}
	}
	if cfg.GossipAdvertise != "" && port(cfg.GossipAdvertise) != port(cfg.GossipBind) {
		probs.add("%s: AMARULA_GOSSIP_ADVERTISE %s and AMARULA_GOSSIP_BIND %s use different ports", where, cfg.GossipAdvertise, cfg.GossipBind)
	}
	if u, err := url.Parse(cfg.AdvertiseURL); err != nil || cfg.AdvertiseURL == "" || u.Port() != strconv.Itoa(int(port(cfg.Listen))) {
		probs.add("%s: AMARULA_ADVERTISE_URL %q must reach AMARULA_LISTEN %s", where, cfg.AdvertiseURL, cfg.Listen)
	}

	// Probes: readiness on /readyz, liveness on /healthz, both served.
	for _, p := range []struct {
		kind, path string
		probe      *corev1.Probe
	}{{"readinessProbe", "/readyz", c.ReadinessProbe}, {"livenessProbe", "/healthz", c.LivenessProbe}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			probs.add("%s: %s must be an httpGet on %s", where, p.kind, p.path)
			continue
		}
		g := p.probe.HTTPGet
		if g.Path != p.path {
			probs.add("%s: %s path %q, want %q", where, p.kind, g.Path, p.path)
		}
		if !strings.Contains(routes, `"GET `+g.Path+`"`) {
			probs.add("%s: %s path %q is not a route of the node (node/, api/)", where, p.kind, g.Path)
		}
		if cp, ok := containerPort(*c, g.Port, corev1.ProtocolTCP); !ok || cp.ContainerPort != port(cfg.Listen) {
			probs.add("%s: %s port %s is not the API port %s", where, p.kind, g.Port.String(), cfg.Listen)
		}
	}

	// Drain: the shutdown budget plus the preStop pause fit the grace period.
	grace := time.Duration(deref(w.template.Spec.TerminationGracePeriodSeconds, 30)) * time.Second
	pause := time.Duration(0)
	if lc := c.Lifecycle; lc != nil && lc.PreStop != nil && lc.PreStop.Sleep != nil {
		pause = time.Duration(lc.PreStop.Sleep.Seconds) * time.Second
	}
	if need := cfg.ShutdownTimeout + pause + 5*time.Second; grace < need {
		probs.add("%s: terminationGracePeriodSeconds %s < AMARULA_SHUTDOWN_TIMEOUT %s + preStop %s + 5s margin", where, grace, cfg.ShutdownTimeout, pause)
	}

	// The data dir must be writable: the root filesystem is read-only.
	mounted := false
	for _, m := range c.VolumeMounts {
		if !m.ReadOnly && (cfg.DataDir == m.MountPath || strings.HasPrefix(cfg.DataDir, strings.TrimSuffix(m.MountPath, "/")+"/")) {
			mounted = true
		}
	}
	if !mounted {
		probs.add("%s: AMARULA_DATA_DIR %s is not on a writable volume (the root filesystem is read-only)", where, cfg.DataDir)
	}
	if lim := c.Resources.Limits.Memory(); env["GOMEMLIMIT"] != "" {
		if b, ok := goMemLimit(env["GOMEMLIMIT"]); !ok || b >= lim.Value() {
			probs.add("%s: GOMEMLIMIT %q must be below the memory limit %s", where, env["GOMEMLIMIT"], lim)
		}
	}

	// Joining: AMARULA_JOIN names the headless service of the node pods,
	// which must publish not-ready pods (a node is ready only once joined)
	// on the gossip port over TCP and UDP.
	if len(cfg.Join) == 0 {
		probs.add("%s: AMARULA_JOIN is empty", where)
	}
	for _, j := range cfg.Join {
		host, p := j, port(cfg.GossipBind)
		if h, ps, err := net.SplitHostPort(j); err == nil {
			host = h
			n, _ := strconv.Atoi(ps)
			p = int32(n)
		}
		svc := root.services[host]
		if svc == nil {
			probs.add("%s: AMARULA_JOIN %q is not a Service of deploy/k8s", where, j)
			continue
		}
		if svc.Spec.ClusterIP != corev1.ClusterIPNone || !svc.Spec.PublishNotReadyAddresses {
			probs.add("%s: AMARULA_JOIN Service %s must be headless with publishNotReadyAddresses", where, host)
		}
		if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(w.template.Labels)) {
			probs.add("%s: AMARULA_JOIN Service %s does not select the node pods", where, host)
		}
		for _, proto := range []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP} {
			if !servicePort(svc, p, proto) {
				probs.add("%s: AMARULA_JOIN Service %s has no %s port %d", where, host, proto, p)
			}
		}
	}

	// The API Service and a PDB of at most one unavailable node.
	apiSvc := false
	for _, svc := range root.services {
		if svc.Spec.ClusterIP != corev1.ClusterIPNone && labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(w.template.Labels)) &&
			servicePort(svc, port(cfg.Listen), corev1.ProtocolTCP) {
			apiSvc = true
		}
	}
	if !apiSvc {
		probs.add("deploy/k8s: no ClusterIP Service exposes the node API port %s", cfg.Listen)
	}
	pdbOK := false
	for _, pdb := range root.pdbs {
		sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
		if err == nil && sel.Matches(labels.Set(w.template.Labels)) && pdb.Spec.MaxUnavailable != nil && pdb.Spec.MaxUnavailable.IntValue() == 1 {
			pdbOK = true
		}
	}
	if !pdbOK {
		probs.add("deploy/k8s: no PodDisruptionBudget with maxUnavailable 1 covers the node pods")
	}
	if a := w.template.Spec.Affinity; a == nil || a.PodAntiAffinity == nil {
		probs.add("%s: no pod anti-affinity", where)
	}

	// The backing services of the examples are the ones the node is
	// configured for.
	if examples == nil {
		return
	}
	for _, e := range cfg.EtcdEndpoints {
		resolveURL(examples, "AMARULA_ETCD_ENDPOINTS", e, probs)
	}
	resolveURL(examples, "AMARULA_REDIS_URL", cfg.RedisURL, probs)
	resolveURL(examples, "AMARULA_S3_ENDPOINT", cfg.S3.Endpoint, probs)
	checkCredentials(cfg, examples, probs)
}

func port(hostport string) int32 {
	_, p, err := net.SplitHostPort(hostport)
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		return -1
	}
	return int32(n)
}

func servicePort(svc *corev1.Service, p int32, proto corev1.Protocol) bool {
	for _, sp := range svc.Spec.Ports {
		spProto := sp.Protocol
		if spProto == "" {
			spProto = corev1.ProtocolTCP
		}
		if sp.Port == p && spProto == proto {
			return true
		}
	}
	return false
}

var memLimitRe = regexp.MustCompile(`^(\d+)(B|KiB|MiB|GiB|TiB)?$`)

// goMemLimit parses GOMEMLIMIT as the Go runtime does (bytes with an
// optional binary unit).
func goMemLimit(s string) (int64, bool) {
	m := memLimitRe.FindStringSubmatch(s)
	if m == nil {
		return 0, false
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return 0, false
	}
	shift := map[string]uint{"": 0, "B": 0, "KiB": 10, "MiB": 20, "GiB": 30, "TiB": 40}[m[2]]
	return n << shift, true
}

// resolveURL checks that a URL of the node's configuration reaches a Service
// of the examples: "svc:port", or "pod.svc:port" for a StatefulSet member.
func resolveURL(ex *bundle, setting, raw string, probs *problems) {
	u, err := url.Parse(raw)
	if err != nil || u.Hostname() == "" {
		probs.add("%s %q: not a URL with a host", setting, raw)
		return
	}
	n, _ := strconv.Atoi(u.Port())
	host := u.Hostname()
	svcName, pod := host, ""
	if i := strings.IndexByte(host, '.'); i > 0 {
		pod, svcName = host[:i], host[i+1:]
	}
	svc := ex.services[svcName]
	if svc == nil {
		probs.add("%s %q: no Service %q in examples", setting, raw, svcName)
		return
	}
	if !servicePort(svc, int32(n), corev1.ProtocolTCP) {
		probs.add("%s %q: Service %s has no port %d", setting, raw, svcName, n)
	}
	if pod == "" {
		return
	}
	for _, w := range ex.workloads {
		if w.kind != "StatefulSet" || w.serviceName != svcName {
			continue
		}
		ord, err := strconv.Atoi(strings.TrimPrefix(pod, w.name+"-"))
		if err == nil && strings.HasPrefix(pod, w.name+"-") && ord >= 0 && ord < int(w.replicas) {
			return
		}
	}
	probs.add("%s %q: %s is not a pod of a StatefulSet governed by Service %s", setting, raw, pod, svcName)
}

// checkCredentials: the node's Redis password and S3 keys are the ones the
// example servers are given.
func checkCredentials(cfg node.Config, ex *bundle, probs *problems) {
	for _, w := range ex.workloads {
		for _, c := range w.template.Spec.Containers {
			env := nodeEnv(ex, &c)
			if pw, ok := env["REDIS_PASSWORD"]; ok {
				u, _ := url.Parse(cfg.RedisURL)
				got, _ := u.User.Password()
				if u.User == nil || got != pw {
					probs.add("AMARULA_REDIS_URL: password differs from the one %s/%s requires", w.kind, w.name)
				}
			}
			if ak, ok := env["ROOT_ACCESS_KEY_ID"]; ok {
				if ak != cfg.S3.AccessKey || env["ROOT_SECRET_ACCESS_KEY"] != cfg.S3.SecretKey {
					probs.add("AMARULA_S3_ACCESS_KEY/SECRET_KEY differ from the root credentials of %s/%s", w.kind, w.name)
				}
			}
		}
	}
}

// checkExamples checks what the examples promise beyond references: etcd
// has 3 members that all know each other, Redis persists with AOF and never
// evicts, the S3 bucket the node uses is created.
func checkExamples(root, ex *bundle, probs *problems) {
	_, nc := nodeWorkload(root)
	var bucket string
	if nc != nil {
		bucket = nodeEnv(root, nc)["AMARULA_S3_BUCKET"]
	}
	var etcd, redis, s3 bool
	for _, w := range ex.workloads {
		for _, c := range w.template.Spec.Containers {
			env := nodeEnv(ex, &c)
			switch {
			case strings.Contains(c.Image, "etcd"):
				etcd = true
				if w.replicas != 3 {
					probs.add("examples etcd: %d members, want 3", w.replicas)
				}
				members := strings.Split(env["ETCD_INITIAL_CLUSTER"], ",")
				if len(members) != int(w.replicas) {
					probs.add("examples etcd: ETCD_INITIAL_CLUSTER lists %d members for %d replicas", len(members), w.replicas)
				}
				for i, m := range members {
					if want := fmt.Sprintf("%s-%d=http://%s-%d.%s:2380", w.name, i, w.name, i, w.serviceName); m != want {
						probs.add("examples etcd: initial cluster member %q, want %q", m, want)
					}
				}
			case strings.Contains(c.Image, "redis"):
				redis = true
				conf := ""
				for _, cm := range ex.configMaps {
					conf += cm.Data["redis.conf"]
				}
				for _, want := range []string{`(?m)^appendonly yes$`, `(?m)^appendfsync (everysec|always)$`, `(?m)^maxmemory-policy noeviction$`, `(?m)^dir /data$`} {
					if !regexp.MustCompile(want).MatchString(conf) {
						probs.add("examples redis.conf: no line matching %s", want)
					}
				}
				if !slices.Contains(c.Command, "/etc/redis/redis.conf") {
					probs.add("examples redis: not started with /etc/redis/redis.conf")
				}
				if !persistent(w, "/data") {
					probs.add("examples redis: /data is not on a PersistentVolumeClaim")
				}
			case strings.Contains(c.Image, "versitygw") || strings.Contains(c.Image, "minio"):
				s3 = true
				if !persistent(w, "/data") {
					probs.add("examples s3: /data is not on a PersistentVolumeClaim")
				}
				made := false
				for _, ic := range w.template.Spec.InitContainers {
					made = made || slices.Contains(ic.Command, "/data/"+bucket)
				}
				if !made {
					probs.add("examples s3: bucket %q (AMARULA_S3_BUCKET) is not created", bucket)
				}
			}
		}
	}
	if !etcd || !redis || !s3 {
		probs.add("examples: want etcd, Redis and S3 workloads (got etcd=%v redis=%v s3=%v)", etcd, redis, s3)
	}
}

// persistent reports whether mountPath of w's first container is backed by
// a PersistentVolumeClaim (a claim template or a claim volume).
func persistent(w *workload, mountPath string) bool {
	pvcVolumes := map[string]bool{}
	for _, n := range w.claims {
		pvcVolumes[n] = true
	}
	for _, v := range w.template.Spec.Volumes {
		if v.PersistentVolumeClaim != nil {
			pvcVolumes[v.Name] = true
		}
	}
	for _, m := range w.template.Spec.Containers[0].VolumeMounts {
		if m.MountPath == mountPath && pvcVolumes[m.Name] {
			return true
		}
	}
	return false
}

func TestManifests(t *testing.T) {
	settings := nodeSettings(t)
	routes := routeSources(t)
	fsys := manifestFS(t)
	probs := check(fsys, settings, routes)
	for _, p := range probs {
		t.Error(p)
	}
	if len(probs) == 0 {
		t.Logf("%d manifest files, every reference checked; node settings known: %d", len(fsys), len(settings))
	}
}

// TestManifestsCatchMistakes proves the checks can fail: each case breaks a
// copy of the manifests in one way and expects the problem to be reported.
func TestManifestsCatchMistakes(t *testing.T) {
	settings := nodeSettings(t)
	routes := routeSources(t)
	base := manifestFS(t)
	cases := []struct {
		name, file, old, new, want string
	}{
		{"api service selector", "service-api.yaml", "    app.kubernetes.io/component: node\n  ports:", "    app.kubernetes.io/component: nodes\n  ports:", "Service/amarula: selector"},
		{"gossip service selector", "service-gossip.yaml", "    app.kubernetes.io/component: node\n  ports:", "    app.kubernetes.io/component: gossip\n  ports:", "selects no pod"},
		{"targetPort names no port", "service-api.yaml", "targetPort: http", "targetPort: htp", "targets htp/TCP"},
		{"UDP gossip port missing", "statefulset.yaml", "              containerPort: 7946\n              protocol: UDP", "              containerPort: 7947\n              protocol: UDP", "is not a UDP container port"},
		{"pdb selector", "pdb.yaml", "    matchLabels:\n      app.kubernetes.io/name: amarula", "    matchLabels:\n      app.kubernetes.io/name: amarulla", "PodDisruptionBudget/amarula: selector"},
		{"pdb allows two", "pdb.yaml", "maxUnavailable: 1", "maxUnavailable: 2", "maxUnavailable 1"},
		{"template labels", "statefulset.yaml", "      labels:\n        app.kubernetes.io/name: amarula\n", "      labels:\n        app.kubernetes.io/name: other\n", "does not match its pod template labels"},
		{"unknown field", "statefulset.yaml", "  replicas: 3", "  replicas: 3\n  replica: 3", "unknown field"},
		{"field with wrong case", "statefulset.yaml", "  replicas: 3", "  Replicas: 3", "case-sensitive"},
		{"duplicate key", "pdb.yaml", "  maxUnavailable: 1", "  maxUnavailable: 1\n  maxUnavailable: 1", "already set"},
		{"two replicas", "statefulset.yaml", "  replicas: 3", "  replicas: 2", "want at least 3"},
		{"unknown setting in configmap", "configmap.yaml", "AMARULA_LOG_FORMAT:", "AMARULA_LOG_FMT:", "AMARULA_LOG_FMT is not a setting the node reads"},
		{"unknown setting in env", "statefulset.yaml", "- name: AMARULA_ADVERTISE_URL", "- name: AMARULA_ADVERTISE_ADDR", "AMARULA_ADVERTISE_ADDR is not a setting"},
		{"stray env", "statefulset.yaml", "- name: GOMEMLIMIT", "- name: MEMLIMIT", "env MEMLIMIT is neither"},
		{"invalid setting value", "configmap.yaml", `AMARULA_LOG_FORMAT: "json"`, `AMARULA_LOG_FORMAT: "xml"`, "the node rejects this configuration: config: AMARULA_LOG_FORMAT"},
		{"advertise without port", "statefulset.yaml", `value: "$(POD_IP):7946"`, `value: "$(POD_IP)"`, "AMARULA_GOSSIP_ADVERTISE"},
		{"undefined $(VAR)", "statefulset.yaml", `value: "http://$(POD_IP):8080"`, `value: "http://$(POD_ADDR):8080"`, "$(POD_ADDR), which is not defined"},
		{"secret key missing", "statefulset.yaml", "key: AMARULA_ADMIN_KEY", "key: ADMIN_KEY", `has no key "ADMIN_KEY"`},
		{"secret missing", "statefulset.yaml", "name: amarula-secrets\n                  key: AMARULA_S3_SECRET_KEY", "name: amarula-secret\n                  key: AMARULA_S3_SECRET_KEY", `Secret "amarula-secret" not found`},
		{"configmap missing", "statefulset.yaml", "name: amarula-config", "name: amarula-cfg", `envFrom ConfigMap "amarula-cfg" not found`},
		{"readiness path", "statefulset.yaml", "path: /readyz", "path: /ready", `readinessProbe path "/ready"`},
		{"liveness port", "statefulset.yaml", "              path: /healthz\n              port: http", "              path: /healthz\n              port: metrics", "livenessProbe port metrics is not a TCP port"},
		{"grace too short", "statefulset.yaml", "terminationGracePeriodSeconds: 45", "terminationGracePeriodSeconds: 30", "terminationGracePeriodSeconds 30s"},
		{"root filesystem writable", "statefulset.yaml", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false", "readOnlyRootFilesystem must be true"},
		{"data dir not mounted", "statefulset.yaml", "mountPath: /var/lib/amarula", "mountPath: /var/lib/other", "AMARULA_DATA_DIR /var/lib/amarula is not on a writable volume"},
		{"join names no service", "configmap.yaml", `AMARULA_JOIN: "amarula-gossip:7946"`, `AMARULA_JOIN: "amarula:7946"`, "must be headless"},
		{"gossip not publishing unready", "service-gossip.yaml", "publishNotReadyAddresses: true", "publishNotReadyAddresses: false", "publishNotReadyAddresses"},
		{"file not in kustomization", "kustomization.yaml", "  - pdb.yaml\n", "", "pdb.yaml: not listed"},
		{"kustomization lists missing file", "kustomization.yaml", "  - pdb.yaml\n", "  - pdb.yaml\n  - hpa.yaml\n", "resource hpa.yaml"},
		{"image not mapped", "kustomization.yaml", "  - name: amarula-node", "  - name: amarula", "images has no entry"},
		{"anti-affinity selects others", "statefulset.yaml", "                  matchLabels:\n                    app.kubernetes.io/name: amarula\n", "                  matchLabels:\n                    app.kubernetes.io/name: web\n", "anti-affinity selector"},
		{"etcd endpoint to nowhere", "configmap.yaml", "http://amarula-etcd-2.amarula-etcd:2379", "http://amarula-etcd-3.amarula-etcd:2379", "amarula-etcd-3 is not a pod"},
		{"s3 endpoint wrong port", "configmap.yaml", "http://amarula-s3:7070", "http://amarula-s3:9000", "has no port 9000"},
		{"redis password differs", "examples/redis.yaml", `password: "REPLACE-ME-redis-password"`, `password: "other"`, "password differs"},
		{"redis without AOF", "examples/redis.yaml", "appendonly yes", "appendonly no", "appendonly yes"},
		{"redis evicting", "examples/redis.yaml", "    maxmemory-policy noeviction\n", "    maxmemory-policy allkeys-lru\n", "noeviction"},
		{"redis rolling on RWO", "examples/redis.yaml", "    type: Recreate", "    type: RollingUpdate", "strategy Recreate"},
		{"etcd two members", "examples/etcd.yaml", "  replicas: 3", "  replicas: 2", "want 3"},
		{"s3 bucket not created", "configmap.yaml", `AMARULA_S3_BUCKET: "amarula-media"`, `AMARULA_S3_BUCKET: "media"`, `bucket "media"`},
		{"s3 keys differ", "examples/s3.yaml", `access-key: "amarula"`, `access-key: "root"`, "differ from the root credentials"},
		{"unknown kind", "pdb.yaml", "kind: PodDisruptionBudget", "kind: PodDisruptionBudgets", "not one this test knows"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fsys := fstest.MapFS{}
			for k, v := range base {
				fsys[k] = &fstest.MapFile{Data: bytes.Clone(v.Data)}
			}
			f := fsys[tc.file]
			if f == nil || !bytes.Contains(f.Data, []byte(tc.old)) {
				t.Fatalf("%s does not contain %q: the case is stale", tc.file, tc.old)
			}
			f.Data = bytes.Replace(f.Data, []byte(tc.old), []byte(tc.new), 1)
			probs := check(fsys, settings, routes)
			for _, p := range probs {
				if strings.Contains(p, tc.want) {
					return
				}
			}
			t.Errorf("no problem mentions %q; got %d:\n%s", tc.want, len(probs), strings.Join(probs, "\n"))
		})
	}
}
