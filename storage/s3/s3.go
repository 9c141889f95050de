package s3

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
)

const (
	// DefaultPartSize is Config.PartSize's default.
	DefaultPartSize = 8 << 20
	// MinPartSize is S3's smallest allowed non-final multipart part.
	MinPartSize = 5 << 20

	metaSHA256 = "sha256" // x-amz-meta-sha256
	// cleanupTimeout bounds the abort of a failed multipart upload, which
	// runs even when the caller's context is already cancelled.
	cleanupTimeout = 30 * time.Second
)

// S3 is the Objects implementation over an S3-compatible service.
type S3 struct {
	client   *awss3.Client
	presign  *awss3.PresignClient
	bucket   string
	partSize int64
	bufs     sync.Pool // *[]byte of partSize
	tr       *http.Transport
	listPage int32 // ListObjectsV2 page size; 0 = the server's (1000)
}

var _ Objects = (*S3)(nil)

// New connects to the bucket described by cfg, creating it when
// cfg.CreateBucket is set and it does not exist.
func New(ctx context.Context, cfg Config) (*S3, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("s3: bucket required")
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	if cfg.PartSize == 0 {
		cfg.PartSize = DefaultPartSize
	}
	if cfg.PartSize < MinPartSize {
		return nil, fmt.Errorf("s3: part size %d below the S3 minimum %d", cfg.PartSize, MinPartSize)
	}
	opts := []func(*config.LoadOptions) error{config.WithRegion(cfg.Region)}
	if cfg.AccessKey != "" || cfg.SecretKey != "" {
		opts = append(opts, config.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(cfg.AccessKey, cfg.SecretKey, "")))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("s3: load aws config: %w", err)
	}
	// Our own copy of the transport the SDK configured (it carries
	// AWS_CA_BUNDLE and the SDK's timeouts), so Close can release its idle
	// connections.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if bc, ok := awsCfg.HTTPClient.(*awshttp.BuildableClient); ok {
		tr = bc.GetTransport()
	}
	client := awss3.NewFromConfig(awsCfg, func(o *awss3.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		o.UsePathStyle = cfg.PathStyle
		o.HTTPClient = &http.Client{Transport: tr}
		// Integrity is end to end: SigV4 signs each body's SHA-256 and we
		// check the object's SHA-256 ourselves. The SDK's extra CRC
		// trailers are not understood by every S3-compatible server.
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
	s := &S3{
		client:   client,
		presign:  awss3.NewPresignClient(client),
		bucket:   cfg.Bucket,
		partSize: cfg.PartSize,
		tr:       tr,
	}
	s.bufs.New = func() any { b := make([]byte, s.partSize); return &b }
	if err := s.ensureBucket(ctx, cfg); err != nil {
		tr.CloseIdleConnections()
		return nil, err
	}
	return s, nil
}

// Close releases idle connections. In-flight calls are not interrupted.
func (s *S3) Close() error {
	s.tr.CloseIdleConnections()
	return nil
}

func (s *S3) ensureBucket(ctx context.Context, cfg Config) error {
	_, err := s.client.HeadBucket(ctx, &awss3.HeadBucketInput{Bucket: aws.String(s.bucket)})
	if err == nil {
		return nil
	}
	var nb *types.NoSuchBucket
	if !isNotFound(err) && !errors.As(err, &nb) {
		return fmt.Errorf("s3: head bucket %s: %w", s.bucket, err)
	}
	if !cfg.CreateBucket {
		return fmt.Errorf("s3: bucket %s does not exist (CreateBucket not set)", s.bucket)
	}
	in := &awss3.CreateBucketInput{Bucket: aws.String(s.bucket)}
	if cfg.Region != "us-east-1" {
		in.CreateBucketConfiguration = &types.CreateBucketConfiguration{
			LocationConstraint: types.BucketLocationConstraint(cfg.Region),
		}
	}
	if _, err := s.client.CreateBucket(ctx, in); err != nil {
		var owned *types.BucketAlreadyOwnedByYou
		if !errors.As(err, &owned) {
			return fmt.Errorf("s3: create bucket %s: %w", s.bucket, err)
		}
	}
	return nil
}

// Put implements Objects. Objects up to PartSize go in one PutObject from a
// pooled buffer; larger ones in a multipart upload, one part buffered at a
// time, aborted on any error or mismatch.
func (s *S3) Put(ctx context.Context, key string, r io.Reader, size int64, contentType, sha256hex string) (Info, error) {
	contentType, err := checkPutArgs(key, contentType, sha256hex)
	if err != nil {
		return Info{}, err
	}
	bp := s.bufs.Get().(*[]byte)
	defer s.bufs.Put(bp)
	buf := *bp
	h := sha256.New()
	cr := ctxReader{ctx: ctx, r: r}

	n, err := io.ReadFull(cr, buf)
	h.Write(buf[:n])
	switch {
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		got := hex.EncodeToString(h.Sum(nil))
		if err := checkPut(key, int64(n), size, got, sha256hex); err != nil {
			return Info{}, err
		}
		_, err := s.client.PutObject(ctx, &awss3.PutObjectInput{
			Bucket:        aws.String(s.bucket),
			Key:           aws.String(key),
			Body:          bytes.NewReader(buf[:n]),
			ContentLength: aws.Int64(int64(n)),
			ContentType:   aws.String(contentType),
			Metadata:      map[string]string{metaSHA256: got},
		})
		if err != nil {
			return Info{}, fmt.Errorf("s3: put %s: %w", key, err)
		}
		return Info{Key: key, Size: int64(n), ContentType: contentType, SHA256: got, ModTime: time.Now()}, nil
	case err != nil:
		return Info{}, fmt.Errorf("s3: put %s: read: %w", key, err)
	}
	return s.putMultipart(ctx, key, cr, buf, h, size, contentType, sha256hex)
}

// putMultipart uploads buf (already full and hashed) and the rest of r.
func (s *S3) putMultipart(ctx context.Context, key string, r io.Reader, buf []byte, h hash.Hash, size int64, contentType, sha256hex string) (info Info, err error) {
	create := &awss3.CreateMultipartUploadInput{
		Bucket:      aws.String(s.bucket),
		Key:         aws.String(key),
		ContentType: aws.String(contentType),
	}
	if sha256hex != "" {
		create.Metadata = map[string]string{metaSHA256: sha256hex}
	}
	up, err := s.client.CreateMultipartUpload(ctx, create)
	if err != nil {
		return Info{}, fmt.Errorf("s3: put %s: create multipart: %w", key, err)
	}
	completed := false
	defer func() {
		if completed {
			return
		}
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		_, _ = s.client.AbortMultipartUpload(actx, &awss3.AbortMultipartUploadInput{
			Bucket: aws.String(s.bucket), Key: aws.String(key), UploadId: up.UploadId,
		})
	}()

	var parts []types.CompletedPart
	total := int64(0)
	n := len(buf)
	for part := int32(1); n > 0; part++ {
		out, err := s.client.UploadPart(ctx, &awss3.UploadPartInput{
			Bucket:        aws.String(s.bucket),
			Key:           aws.String(key),
			UploadId:      up.UploadId,
			PartNumber:    aws.Int32(part),
			Body:          bytes.NewReader(buf[:n]),
			ContentLength: aws.Int64(int64(n)),
		})
		if err != nil {
			return Info{}, fmt.Errorf("s3: put %s: part %d: %w", key, part, err)
		}
		parts = append(parts, types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(part)})
		total += int64(n)
		if size >= 0 && total > size {
			return Info{}, fmt.Errorf("put %s: %w: announced %d bytes, read more", key, ErrSizeMismatch, size)
		}
		var rerr error
		n, rerr = io.ReadFull(r, buf)
		h.Write(buf[:n])
		if rerr != nil && !errors.Is(rerr, io.EOF) && !errors.Is(rerr, io.ErrUnexpectedEOF) {
			return Info{}, fmt.Errorf("s3: put %s: read: %w", key, rerr)
		}
	}
	got := hex.EncodeToString(h.Sum(nil))
	if err := checkPut(key, total, size, got, sha256hex); err != nil {
		return Info{}, err
	}
	if _, err := s.client.CompleteMultipartUpload(ctx, &awss3.CompleteMultipartUploadInput{
		Bucket:          aws.String(s.bucket),
		Key:             aws.String(key),
		UploadId:        up.UploadId,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
	}); err != nil {
		return Info{}, fmt.Errorf("s3: put %s: complete multipart: %w", key, err)
	}
	completed = true
	if sha256hex == "" {
		// The checksum is known only now; metadata can only be replaced by
		// copying the object onto itself (server side, no bytes through us).
		if _, err := s.client.CopyObject(ctx, &awss3.CopyObjectInput{
			Bucket:            aws.String(s.bucket),
			Key:               aws.String(key),
			CopySource:        aws.String(s.bucket + "/" + key),
			MetadataDirective: types.MetadataDirectiveReplace,
			ContentType:       aws.String(contentType),
			Metadata:          map[string]string{metaSHA256: got},
		}); err != nil {
			return Info{}, fmt.Errorf("s3: put %s: record sha256: %w", key, err)
		}
	}
	return Info{Key: key, Size: total, ContentType: contentType, SHA256: got, ModTime: time.Now()}, nil
}

// Get implements Objects.
func (s *S3) Get(ctx context.Context, key string, rng *Range) (io.ReadCloser, Info, error) {
	if err := ValidateKey(key); err != nil {
		return nil, Info{}, err
	}
	in := &awss3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)}
	if rng != nil {
		if rng.Offset < 0 || rng.Length == 0 {
			return nil, Info{}, fmt.Errorf("s3: get %s: %w: offset %d length %d", key, ErrInvalidRange, rng.Offset, rng.Length)
		}
		if rng.Length < 0 {
			in.Range = aws.String(fmt.Sprintf("bytes=%d-", rng.Offset))
		} else {
			in.Range = aws.String(fmt.Sprintf("bytes=%d-%d", rng.Offset, rng.Offset+rng.Length-1))
		}
	}
	out, err := s.client.GetObject(ctx, in)
	if err != nil {
		return nil, Info{}, s.mapErr("get", key, err)
	}
	info := Info{
		Key:         key,
		Size:        aws.ToInt64(out.ContentLength),
		ContentType: aws.ToString(out.ContentType),
		SHA256:      out.Metadata[metaSHA256],
		ModTime:     aws.ToTime(out.LastModified),
	}
	if rng == nil {
		return newVerifyReader(out.Body, key, info), info, nil
	}
	total, ok := parseContentRangeTotal(aws.ToString(out.ContentRange))
	if !ok {
		// A server may ignore a range covering the whole object.
		if rng.Offset != 0 {
			_ = out.Body.Close()
			return nil, Info{}, fmt.Errorf("s3: get %s: no Content-Range in ranged response", key)
		}
		total = info.Size
	}
	info.Size = total
	return out.Body, info, nil
}

// parseContentRangeTotal reads the total of "bytes a-b/total".
func parseContentRangeTotal(cr string) (int64, bool) {
	i := strings.LastIndexByte(cr, '/')
	if i < 0 {
		return 0, false
	}
	n, err := strconv.ParseInt(cr[i+1:], 10, 64)
	return n, err == nil
}

// Stat implements Objects.
func (s *S3) Stat(ctx context.Context, key string) (Info, error) {
	if err := ValidateKey(key); err != nil {
		return Info{}, err
	}
	out, err := s.client.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)})
	if err != nil {
		return Info{}, s.mapErr("stat", key, err)
	}
	return Info{
		Key:         key,
		Size:        aws.ToInt64(out.ContentLength),
		ContentType: aws.ToString(out.ContentType),
		SHA256:      out.Metadata[metaSHA256],
		ModTime:     aws.ToTime(out.LastModified),
	}, nil
}

// Delete implements Objects.
func (s *S3) Delete(ctx context.Context, key string) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	if _, err := s.client.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)}); err != nil {
		if err := s.mapErr("delete", key, err); !errors.Is(err, ErrNotFound) {
			return err
		}
	}
	return nil
}

// DeletePrefix implements Objects: it lists the prefix page by page and
// removes each page with one DeleteObjects call.
func (s *S3) DeletePrefix(ctx context.Context, prefix string) (int, error) {
	if err := validatePrefix(prefix); err != nil {
		return 0, err
	}
	deleted := 0
	in := &awss3.ListObjectsV2Input{Bucket: aws.String(s.bucket), Prefix: aws.String(prefix)}
	if s.listPage > 0 {
		in.MaxKeys = aws.Int32(s.listPage)
	}
	p := awss3.NewListObjectsV2Paginator(s.client, in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return deleted, fmt.Errorf("s3: delete prefix %s: list: %w", prefix, err)
		}
		if len(page.Contents) == 0 {
			continue
		}
		ids := make([]types.ObjectIdentifier, 0, len(page.Contents))
		for _, o := range page.Contents {
			ids = append(ids, types.ObjectIdentifier{Key: o.Key})
		}
		out, err := s.client.DeleteObjects(ctx, &awss3.DeleteObjectsInput{
			Bucket: aws.String(s.bucket),
			Delete: &types.Delete{Objects: ids, Quiet: aws.Bool(true)},
		})
		if err != nil {
			return deleted, fmt.Errorf("s3: delete prefix %s: %w", prefix, err)
		}
		if len(out.Errors) > 0 {
			e := out.Errors[0]
			return deleted, fmt.Errorf("s3: delete prefix %s: %d failures, first %s: %s",
				prefix, len(out.Errors), aws.ToString(e.Key), aws.ToString(e.Message))
		}
		deleted += len(ids)
	}
	return deleted, nil
}

// PresignGet implements Objects with a SigV4 query-signed URL.
func (s *S3) PresignGet(ctx context.Context, key string, ttl time.Duration) (string, error) {
	if err := ValidateKey(key); err != nil {
		return "", err
	}
	req, err := s.presign.PresignGetObject(ctx,
		&awss3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)},
		awss3.WithPresignExpires(ttl))
	if err != nil {
		return "", fmt.Errorf("s3: presign %s: %w", key, err)
	}
	return req.URL, nil
}

// mapErr turns S3 "no such key" and "invalid range" answers into the
// package's sentinels and wraps everything else.
func (s *S3) mapErr(op, key string, err error) error {
	if isNotFound(err) {
		return fmt.Errorf("s3: %s %s: %w", op, key, ErrNotFound)
	}
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode() == "InvalidRange" {
		return fmt.Errorf("s3: %s %s: %w", op, key, ErrInvalidRange)
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) && re.HTTPStatusCode() == http.StatusRequestedRangeNotSatisfiable {
		return fmt.Errorf("s3: %s %s: %w", op, key, ErrInvalidRange)
	}
	return fmt.Errorf("s3: %s %s: %w", op, key, err)
}

func isNotFound(err error) bool {
	var nsk *types.NoSuchKey
	var nf *types.NotFound
	if errors.As(err, &nsk) || errors.As(err, &nf) {
		return true
	}
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode() {
		case "NoSuchKey", "NotFound":
			return true
		}
	}
	var re *awshttp.ResponseError
	return errors.As(err, &re) && re.HTTPStatusCode() == http.StatusNotFound
}
