/* Fused CPU kernel for the linear attention forms (mobileattn kernels.cpu_linear).

   out = phi(q) S[:, :Dv] / (phi(q) S[:, Dv] + eps),   S = phi(k)^T [v, 1]   (per head)

   One pass over the keys builds the key state S (F x W, W = Dv + 1 rounded up to 16
   floats, zero-padded) and one pass over the queries applies it. Both passes run in
   cache-sized chunks: the feature map is applied while a chunk is copied into an aligned
   buffer, the GEMM runs from that buffer through a register-blocked micro-kernel, and the
   division runs on the chunk's product while it is still in cache. Nothing N-sized is
   written but the output. fp32 throughout (fp32 accumulation, as torch's CPU matmul).

   Built by kernels/cpu_linear.py with the host compiler (-O3 -march=native); the vector
   type follows what the target offers (AVX-512: 16 floats, AVX: 8, else 4). Heads are
   split across `nthreads` OpenMP threads. */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__AVX512F__)
#define VEC 16
#define NVMAX 5 /* 4 x 5 accumulators + 5 B vectors + 1 broadcast <= 32 registers */
#elif defined(__AVX__)
#define VEC 8
#define NVMAX 3 /* 4 x 3 + 3 + 1 <= 16 registers */
#else
#define VEC 4
#define NVMAX 3
#endif
#define MR 4
#define PANEL 16 /* W is a multiple of this (and so of VEC) */
#define ALIGN 64

typedef float vf __attribute__((vector_size(VEC * 4), aligned(VEC * 4)));
typedef int32_t vi __attribute__((vector_size(VEC * 4), aligned(VEC * 4)));

/* Keeps a loaded B vector in a register: without it GCC folds the load into every FMA
   that uses it (R loads per vector instead of one), and the loop becomes load-bound. */
#if defined(__GNUC__) && defined(__x86_64__)
#define PIN(x) __asm__("" : "+v"(x))
#elif defined(__GNUC__) && defined(__aarch64__)
#define PIN(x) __asm__("" : "+w"(x))
#else
#define PIN(x) ((void)0)
#endif

/* C[R x NV*VEC] (+)= sum_p A(:, p) B(p, :), A(i, p) = A[i * a_rs + p * a_ps]; B rows and
   C rows aligned to VEC floats. */
#define DEFINE_MK(R, NV)                                                                 \
    static void mk_##R##_##NV(long K, const float *A, long a_rs, long a_ps,              \
                              const float *B, long b_rs, float *C, long c_rs, int load) { \
        vf acc[R][NV];                                                                   \
        for (int r = 0; r < R; r++)                                                      \
            for (int j = 0; j < NV; j++)                                                 \
                acc[r][j] = load ? *(const vf *)(C + r * c_rs + j * VEC) : (vf){0};      \
        for (long p = 0; p < K; p++) {                                                   \
            const float *b = B + p * b_rs;                                               \
            const float *a = A + p * a_ps;                                               \
            vf bv[NV];                                                                   \
            for (int j = 0; j < NV; j++) {                                               \
                bv[j] = *(const vf *)(b + j * VEC);                                      \
                PIN(bv[j]);                                                              \
            }                                                                            \
            for (int r = 0; r < R; r++) {                                                \
                float s = a[r * a_rs];                                                   \
                for (int j = 0; j < NV; j++) acc[r][j] += s * bv[j];                     \
            }                                                                            \
        }                                                                                \
        for (int r = 0; r < R; r++)                                                      \
            for (int j = 0; j < NV; j++) *(vf *)(C + r * c_rs + j * VEC) = acc[r][j];    \
    }

#define DEFINE_ROW(R) DEFINE_MK(R, 1) DEFINE_MK(R, 2) DEFINE_MK(R, 3) DEFINE_MK(R, 4) DEFINE_MK(R, 5)
DEFINE_ROW(1)
DEFINE_ROW(2)
DEFINE_ROW(3)
DEFINE_ROW(4)

typedef void (*mk_fn)(long, const float *, long, long, const float *, long, float *, long, int);
#define ROW_FNS(R) {mk_##R##_1, mk_##R##_2, mk_##R##_3, mk_##R##_4, mk_##R##_5}
static const mk_fn MK[MR][5] = {ROW_FNS(1), ROW_FNS(2), ROW_FNS(3), ROW_FNS(4)};

/* C[M x W] (+)= A[M x K] B[K x W]. */
static void gemm(long M, long W, long K, const float *A, long a_rs, long a_ps, const float *B,
                 long b_rs, float *C, long c_rs, int load) {
    long nvt = W / VEC;
    for (long j0 = 0; j0 < nvt; j0 += NVMAX) {
        long nv = nvt - j0 < NVMAX ? nvt - j0 : NVMAX;
        for (long i0 = 0; i0 < M; i0 += MR) {
            long r = M - i0 < MR ? M - i0 : MR;
            MK[r - 1][nv - 1](K, A + i0 * a_rs, a_rs, a_ps, B + j0 * VEC, b_rs,
                              C + i0 * c_rs + j0 * VEC, c_rs, load);
        }
    }
}

/* Feature maps, applied to one row x (D floats) into dst (F floats). ReLU is written
   x < 0 ? 0 : x so that a NaN input stays NaN, as torch.relu keeps it. */
enum { FEAT_IDENTITY = 0, FEAT_RELU = 1, FEAT_RELU_COSSIN = 2, FEAT_FOCUS = 3, FEAT_ELU1 = 4 };

static inline float relu(float x) { return x < 0.0f ? 0.0f : x; }

/* e^m for m <= 0, vectorisable: m = n ln 2 + r with n = rint(m log2 e)
   and r from a two-part ln 2 (Cody-Waite: r exact to ~1e-10), e^r by its degree-7 Taylor
   polynomial (|r| <= 0.35: truncation below 0.1 ulp), times 2^n built in the exponent
   bits. Measured within 0.64 ulp over [-87.33, 10] (tests allow 2); 0 below
   m = ln(FLT_MIN) = -87.3365, where e^m is under FLT_MIN (torch gives subnormals there). */
static inline float exp_nonpos(float m) {
    float n = rintf(m * 1.44269504f);
    float r = fmaf(-n, 0.693359375f, m);
    r = fmaf(-n, -2.12194440e-4f, r);
    float e = 1.0f / 5040;
    e = fmaf(e, r, 1.0f / 720);
    e = fmaf(e, r, 1.0f / 120);
    e = fmaf(e, r, 1.0f / 24);
    e = fmaf(e, r, 1.0f / 6);
    e = fmaf(e, r, 0.5f);
    e = fmaf(e, r, 1.0f);
    e = fmaf(e, r, 1.0f);
    int32_t bits = ((int32_t)(m < -87.3365448f ? -127.0f : n) + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return m < -87.3365448f ? 0.0f : e * scale;
}

static void feature_row(int feat, const float *restrict x, long D, float *restrict dst,
                        float wc, float ws, float p) {
    switch (feat) {
    case FEAT_RELU:
#pragma omp simd
        for (long d = 0; d < D; d++) dst[d] = relu(x[d]);
        break;
    case FEAT_RELU_COSSIN: /* [relu(x) cos a_i, relu(x) sin a_i] */
#pragma omp simd
        for (long d = 0; d < D; d++) {
            float r = relu(x[d]);
            dst[d] = r * wc;
            dst[D + d] = r * ws;
        }
        break;
    case FEAT_FOCUS: { /* ||relu(x)|| / ||relu(x)^p|| relu(x)^p; all-zero rows stay zero */
        float n1 = 0.0f, n2 = 0.0f;
        if (p == 3.0f) { /* FLatten's power, as torch's pow computes it: x * x * x */
            /* explicit vectors: GCC keeps a float sum in order, so it would not vectorise */
            vf s1v = {0}, s2v = {0};
            long d = 0;
            for (; d + VEC <= D; d += VEC) {
                vf xv;
                memcpy(&xv, x + d, sizeof xv);
                vf r = (vf)((vi)xv & ~(xv < (vf){0})); /* relu; NaN kept */
                vf rp = r * r * r;
                s1v += r * r;
                s2v += rp * rp;
                memcpy(dst + d, &rp, sizeof rp);
            }
            for (int i = 0; i < VEC; i++) n1 += s1v[i], n2 += s2v[i];
            for (; d < D; d++) {
                float r = relu(x[d]), rp = r * r * r;
                n1 += r * r;
                n2 += rp * rp;
                dst[d] = rp;
            }
        } else {
            for (long d = 0; d < D; d++) {
                float r = relu(x[d]), rp = p == 2.0f ? r * r : powf(r, p);
                n1 += r * r;
                n2 += rp * rp;
                dst[d] = rp;
            }
        }
        float scale = n2 > 0.0f ? sqrtf(n1) / sqrtf(n2) : 1.0f;
#pragma omp simd
        for (long d = 0; d < D; d++) dst[d] *= scale;
        break;
    }
    case FEAT_ELU1: /* elu(x) + 1 = e^min(x, 0) + relu(x), as attention_zoo.elu_linear */
#pragma omp simd
        for (long d = 0; d < D; d++) {
            float m = x[d] < 0.0f ? x[d] : 0.0f; /* NaN: 0 here, NaN through relu */
            dst[d] = exp_nonpos(m) + relu(x[d]);
        }
        break;
    default:
        memcpy(dst, x, (size_t)D * sizeof(float));
    }
}

/* feature_row over rows [row0, row0 + rows) of x (row stride xs) into dst (rows x F,
   contiguous); wc, ws: cosFormer's weights per row of x, or NULL. */
static void feature_rows(int feat, const float *x, long row0, long rows, long xs, long D,
                         float *dst, long F, const float *wc, const float *ws, float p) {
    for (long n = 0; n < rows; n++) {
        long i = row0 + n;
        feature_row(feat, x + i * xs, D, dst + n * F, wc ? wc[i] : 1.0f, ws ? ws[i] : 0.0f, p);
    }
}

typedef struct {
    const float *q, *k, *v;
    float *out;
    long H, Nq, Nk, D, Dv, F, W;
    long qs[3], ks[3], vs[3]; /* strides (elements) of batch, head, row */
    const float *wq_c, *wq_s, *wk_c, *wk_s;
    float eps, p;
    int feat;
    long h0, h1; /* heads [h0, h1) of the flattened B*H */
    int status;
} job_t;

#define CK 128 /* keys per chunk */
#define CQ 64 /* queries per chunk */
#define KB 128 /* at most this many features per partial sum of the query pass */

static float *aligned_floats(long n) {
    size_t bytes = ((size_t)n * sizeof(float) + ALIGN - 1) / ALIGN * ALIGN;
    return (float *)aligned_alloc(ALIGN, bytes ? bytes : ALIGN);
}

static void run_job(job_t *j) {
    long F = j->F, W = j->W, D = j->D, Dv = j->Dv;
    float *S = aligned_floats(F * W);
    float *Sc = aligned_floats(F * W);
    float *fbuf = aligned_floats((CK > CQ ? CK : CQ) * F);
    float *wbuf = aligned_floats((CK > CQ ? CK : CQ) * W);
    float *tbuf = aligned_floats(CQ * W);
    if (!S || !Sc || !fbuf || !wbuf || !tbuf) {
        j->status = -1;
        free(S), free(Sc), free(fbuf), free(wbuf), free(tbuf);
        return;
    }
    long kb = (F + (F + KB - 1) / KB - 1) / ((F + KB - 1) / KB); /* F split evenly */
    for (long bh = j->h0; bh < j->h1; bh++) {
        long b = bh / j->H, h = bh % j->H;
        const float *q = j->q + b * j->qs[0] + h * j->qs[1];
        const float *k = j->k + b * j->ks[0] + h * j->ks[1];
        const float *v = j->v + b * j->vs[0] + h * j->vs[1];
        float *out = j->out + bh * j->Nq * Dv;
        memset(S, 0, (size_t)F * W * sizeof(float));
        for (long n0 = 0; n0 < j->Nk; n0 += CK) {
            long nb = j->Nk - n0 < CK ? j->Nk - n0 : CK;
            feature_rows(j->feat, k, n0, nb, j->ks[2], D, fbuf, F, j->wk_c, j->wk_s, j->p);
            for (long n = 0; n < nb; n++) {
                float *w = wbuf + n * W;
                memcpy(w, v + (n0 + n) * j->vs[2], (size_t)Dv * sizeof(float));
                w[Dv] = 1.0f;
                for (long c = Dv + 1; c < W; c++) w[c] = 0.0f;
            }
            /* Sc (F x W) = fbuf^T (F x nb) wbuf (nb x W); S += Sc. Summing per chunk, then
               the chunks, keeps the rounding error of an N-term sum near sqrt-of-terms
               growth (a single running sum over all keys doubles the max error at N = 2760
               against torch's matmul). */
            gemm(F, W, nb, fbuf, 1, F, wbuf, W, Sc, W, 0);
            for (long e = 0; e < F * W; e++) S[e] += Sc[e];
        }
        for (long n0 = 0; n0 < j->Nq; n0 += CQ) {
            long nb = j->Nq - n0 < CQ ? j->Nq - n0 : CQ;
            feature_rows(j->feat, q, n0, nb, j->qs[2], D, fbuf, F, j->wq_c, j->wq_s, j->p);
            /* wbuf (nb x W) = fbuf (nb x F) S (F x W), summed at most KB
               features at a time: shorter sums, smaller rounding errors */
            for (long f0 = 0; f0 < F; f0 += kb) {
                long fb = F - f0 < kb ? F - f0 : kb;
                float *dst = f0 == 0 ? wbuf : tbuf;
                gemm(nb, W, fb, fbuf + f0, F, 1, S + f0 * W, W, dst, W, 0);
                if (f0 > 0)
                    for (long e = 0; e < nb * W; e++) wbuf[e] += tbuf[e];
            }
            for (long n = 0; n < nb; n++) {
                const float *row = wbuf + n * W;
                float *o = out + (n0 + n) * Dv;
#pragma omp simd
                for (long c = 0; c < Dv; c++) o[c] = row[c] / (row[Dv] + j->eps);
            }
        }
    }
    free(S), free(Sc), free(fbuf), free(wbuf), free(tbuf);
}

/* Returns 0, or -1 when a buffer could not be allocated (the caller raises).
   out: contiguous (B, H, Nq, Dv). */
int mla_linear_f32(const float *q, const float *k, const float *v, float *out, long B, long H,
                   long Nq, long Nk, long D, long Dv, const long *qs, const long *ks,
                   const long *vs, int feat, const float *wq_c, const float *wq_s,
                   const float *wk_c, const float *wk_s, float eps, float p, int nthreads) {
    long heads = B * H;
    if (heads == 0 || Nq == 0) return 0;
    job_t base;
    memset(&base, 0, sizeof base);
    base.q = q, base.k = k, base.v = v, base.out = out;
    base.H = H, base.Nq = Nq, base.Nk = Nk, base.D = D, base.Dv = Dv;
    base.F = feat == FEAT_RELU_COSSIN ? 2 * D : D;
    base.W = (Dv + 1 + PANEL - 1) / PANEL * PANEL;
    for (int i = 0; i < 3; i++) base.qs[i] = qs[i], base.ks[i] = ks[i], base.vs[i] = vs[i];
    base.wq_c = wq_c, base.wq_s = wq_s, base.wk_c = wk_c, base.wk_s = wk_s;
    base.eps = eps, base.p = p, base.feat = feat, base.status = 0;
    if (nthreads < 1) nthreads = 1;
    if (nthreads > heads) nthreads = (int)heads;
    if (nthreads > 64) nthreads = 64;
    job_t jobs[64];
    for (int t = 0; t < nthreads; t++) {
        jobs[t] = base;
        jobs[t].h0 = heads * t / nthreads;
        jobs[t].h1 = heads * (t + 1) / nthreads;
    }
    /* OpenMP, not threads of our own: this library is loaded into a process where torch
       has loaded its libgomp, so the region runs on torch's own worker threads (a second
       pool would compete for the cores with torch's workers, which spin-wait after each
       parallel op). */
#pragma omp parallel for num_threads(nthreads) schedule(static, 1)
    for (int t = 0; t < nthreads; t++) run_job(&jobs[t]);
    int rc = 0;
    for (int t = 0; t < nthreads; t++)
        if (jobs[t].status) rc = jobs[t].status;
    return rc;
}

/* The vector width the build targets, in floats (for the Python side's diagnostics). */
int mla_vector_width(void) { return VEC; }

/* The feature map `feat` of `rows` rows of x (row stride xs, D floats each) into dst
   (rows x F, contiguous); weights wc, ws per row for FEAT_RELU_COSSIN (else NULL). For
   tests of the fused maps against torch's, and for timing them alone. */
void mla_feature_rows(int feat, const float *x, long rows, long xs, long D, float *dst,
                      const float *wc, const float *ws, float p) {
    feature_rows(feat, x, 0, rows, xs, D, dst, feat == FEAT_RELU_COSSIN ? 2 * D : D, wc, ws, p);
}
