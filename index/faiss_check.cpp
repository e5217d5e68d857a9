// faiss_check.cpp - what index/ivf.c does to FAISS through C++ because its
// C API (1.7.3) cannot: a check of an index read from a file, a training's
// interrupt, a compaction's relabelling of the inverted lists, a search
// with its own nprobe, and the bytes an index holds, its lists and the
// rest (below).
// The check: FAISS's C API does not say how an IVF index read from a file
// encodes its vectors (its faiss_Index_sa_code_size even forgets to set its
// result), and FAISS trusts those fields of the file when it adds: an SQ8
// index said to have 1-byte codes, or a quantiser of another dimension,
// writes past its buffers. See ivf.c's codes_ok.
#include <faiss/IndexIVF.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/IndexScalarQuantizer.h>
#include <faiss/invlists/InvertedLists.h>

extern "C" int sc_faiss_ivf_codes_ok(const void* index, int sq8,
                                     unsigned dim) {
    try {
        const auto* ivf = dynamic_cast<const faiss::IndexIVF*>(
                static_cast<const faiss::Index*>(index));
        if (ivf == nullptr || ivf->d != (faiss::Index::idx_t)dim ||
            ivf->invlists == nullptr || ivf->invlists->nlist != ivf->nlist) {
            return 0;
        }
        size_t code = sq8 ? dim : dim * sizeof(float);
        if (ivf->code_size != code || ivf->invlists->code_size != code) {
            return 0;
        }
        // The lists must hold what ntotal says: a file whose header says 0
        // but whose lists hold entries brought phantom labels in with it
        // (every live row found twice, once a slot of that label filled).
        size_t held = 0;
        for (size_t l = 0; l < ivf->nlist; l++) {
            held += ivf->invlists->list_size(l);
        }
        if (held != (size_t)ivf->ntotal) {
            return 0;
        }
        if (!sq8) {
            return dynamic_cast<const faiss::IndexIVFFlat*>(ivf) != nullptr;
        }
        const auto* s =
                dynamic_cast<const faiss::IndexIVFScalarQuantizer*>(ivf);
        return s != nullptr && s->sq.d == dim &&
                s->sq.qtype == faiss::ScalarQuantizer::QT_8bit &&
                s->sq.code_size == dim && s->sq.trained.size() == 2 * dim;
    } catch (...) {
        return 0;
    }
}

// A training's k-means and adds stop at FAISS's next check of its interrupt
// callback (after each k-means iteration, between blocks of a brute-force
// search) when the thread's stop function says so: a closing index cancels
// its training (ivf.c). FAISS has one callback for the process; it asks a
// function set per thread, so that no other thread's work stops.
#include <faiss/impl/AuxIndexStructures.h>

namespace
{
thread_local int (*stop_fn)(void *) = nullptr;
thread_local void *stop_arg = nullptr;

struct ThreadStop : faiss::InterruptCallback {
    bool want_interrupt() override
    {
        return stop_fn != nullptr && stop_fn(stop_arg) != 0;
    }
};

// Installed before main, while no thread can be searching: FAISS reads
// its callback pointer without a lock, so setting it later (at the first
// training) would race with other namespaces' searches.
struct InstallStop {
    InstallStop()
    {
        try {
            faiss::InterruptCallback::instance.reset(new ThreadStop);
            installed = true;
        } catch (...) {
            installed = false;
        }
    }
    bool installed;
};
const InstallStop install_stop;
} // namespace

extern "C" int sc_faiss_stop_when(int (*fn)(void *), void *arg)
{
    if (!install_stop.installed)
        return -1;
    stop_fn = fn;
    stop_arg = arg;
    return 0;
}

// An IVF index's compaction (ivf.c's shrink): every entry's label becomes
// to[label], and each inverted list gives back the capacity it no longer
// uses. FAISS's lists are std::vectors that never shrink by themselves (its
// remove_ids and reset only resize them), and its C API renumbers nothing:
// relabelling in place keeps every code in the list it was assigned to, so
// the index answers as before, without encoding or assigning a row again.
// Nothing changes unless every label is below n and mapped (to[label] !=
// UINT32_MAX); a list that cannot be reallocated keeps its capacity.
#include <cstdint>
#include <faiss/invlists/DirectMap.h>

// The IVF index behind one of ivf.c's handles (*ivf, or nullptr) and its
// inverted lists when they are FAISS's arrays (nullptr when not): what the
// relabel, the list cut and the two byte counts below all start from. A
// caller given a const handle reads through the result only.
static faiss::ArrayInvertedLists *array_lists(const void *index,
                                              faiss::IndexIVF **ivf)
{
    *ivf = dynamic_cast<faiss::IndexIVF *>(
        static_cast<faiss::Index *>(const_cast<void *>(index)));
    return *ivf == nullptr
               ? nullptr
               : dynamic_cast<faiss::ArrayInvertedLists *>((*ivf)->invlists);
}

extern "C" int sc_faiss_ivf_relabel(void *index, const uint32_t *to, size_t n)
{
    try {
        faiss::IndexIVF *ivf;
        auto *al = array_lists(index, &ivf);
        if (al == nullptr || !ivf->direct_map.no() ||
            al->ids.size() != ivf->nlist || al->codes.size() != ivf->nlist) {
            return -1;
        }
        for (const auto &l : al->ids) {
            for (faiss::Index::idx_t lab : l) {
                if (lab < 0 || (size_t)lab >= n || to[lab] == UINT32_MAX) {
                    return -1;
                }
            }
        }
        for (size_t i = 0; i < ivf->nlist; i++) {
            for (auto &lab : al->ids[i]) {
                lab = to[lab];
            }
            try {
                al->ids[i].shrink_to_fit();
                al->codes[i].shrink_to_fit();
            } catch (...) {
                // Larger than needed, still correct.
            }
        }
        return 0;
    } catch (...) {
        return -1;
    }
}

// Cuts each list whose capacity is more than twice its size to its size
// (ivf.c's flush_removals, after a batch of removes): a remove keeps a
// list's capacity, so under topic drift at a steady live count the lists
// kept the capacity they once reached (16 lists of 4,096 x 64 replaced one
// topic at a time: 10.9 times what their rows use). Cut, and grown by
// doubling (std::vector's resize, FAISS's add_entries), a list holds at
// most twice its size, the bound the byte caps charge. No label changes.
// The cost is a pass over the nlist lists, which remove_ids has just
// made, plus a copy of each list cut. Nothing when the lists are not
// FAISS's arrays; a list that cannot be reallocated keeps its capacity.
// What it gives back is not reported: nothing needs it (sc_index_memory
// reads the lists' capacity itself, sc_faiss_ivf_list_bytes).
extern "C" void sc_faiss_ivf_trim_lists(void *index)
{
    try {
        faiss::IndexIVF *ivf;
        auto *al = array_lists(index, &ivf);
        if (al == nullptr || al->ids.size() != al->codes.size()) {
            return;
        }
        for (size_t i = 0; i < al->ids.size(); i++) {
            auto &ids = al->ids[i];
            auto &codes = al->codes[i];
            if (ids.capacity() <= 2 * ids.size() &&
                codes.capacity() <= 2 * codes.size()) {
                continue;
            }
            try {
                ids.shrink_to_fit();
                codes.shrink_to_fit();
            } catch (...) {
                // Larger than needed, still correct.
            }
        }
    } catch (...) {
    }
}

// An IVF search with its nprobe given per call (FAISS's SearchParametersIVF;
// the C API of 1.7.3 has no search parameters): ivf.c keeps nprobe itself,
// so that setting it writes nothing FAISS reads and waits for no lock. The
// index's own nprobe field is never read: every search passes one. FAISS
// takes min(nprobe, nlist), as it does with its field, and max_codes 0 (no
// limit) and no IDSelector, as the field's search has. Returns 0, or -1
// when FAISS threw (its message is dropped, as a search's is in ivf.c).
extern "C" int sc_faiss_ivf_search(const void *index, int64_t n, const float *x,
                                   int64_t k, size_t nprobe, float *dist,
                                   int64_t *lab)
{
    try {
        faiss::SearchParametersIVF sp;
        sp.nprobe = nprobe;
        static_cast<const faiss::Index *>(index)->search(n, x, k, dist, lab,
                                                         &sp);
        return 0;
    } catch (...) {
        return -1;
    }
}

// What an IVF index's inverted lists take (ivf.c's ivf_memory): each
// list's codes and labels at their capacity, which FAISS's C API does not
// show. A list's vectors double when full, so they hold between once and
// twice what they use; a shrink (sc_faiss_ivf_relabel) cuts them to their
// size; a remove leaves them as they were until its batch's flush
// (sc_faiss_ivf_trim_lists). -1, *bytes untouched, when the
// lists are not FAISS's arrays.
extern "C" int sc_faiss_ivf_list_bytes(const void *index, size_t *bytes)
{
    try {
        faiss::IndexIVF *ivf;
        const auto *al = array_lists(index, &ivf);
        if (al == nullptr) {
            return -1;
        }
        size_t b = 0;
        for (size_t i = 0; i < al->ids.size(); i++) {
            b += al->ids[i].capacity() * sizeof(faiss::Index::idx_t);
        }
        for (size_t i = 0; i < al->codes.size(); i++) {
            b += al->codes[i].capacity();
        }
        *bytes = b;
        return 0;
    } catch (...) {
        return -1;
    }
}

// What an IVF index holds beside its lists' codes and labels (ivf.c's
// ivf_memory): its objects (the IVF index, its lists' table and the
// quantiser), the lists' table itself (a pair of std::vector a list), the
// centroids (the flat quantiser's codes, nlist x d floats) and, for SQ8,
// the quantiser's trained ranges, at their capacity. -1, *bytes
// untouched, when it is not an IVF index over FAISS's arrays and a flat
// quantiser.
#include <faiss/IndexFlat.h>

extern "C" int sc_faiss_ivf_fixed_bytes(const void *index, size_t *bytes)
{
    try {
        faiss::IndexIVF *ivf;
        const auto *al = array_lists(index, &ivf);
        const auto *q =
            ivf == nullptr
                ? nullptr
                : dynamic_cast<const faiss::IndexFlatCodes *>(ivf->quantizer);
        if (al == nullptr || q == nullptr) {
            return -1;
        }
        const auto *sq =
            dynamic_cast<const faiss::IndexIVFScalarQuantizer *>(ivf);
        size_t b = sq != nullptr
                       ? sizeof(*sq) + sq->sq.trained.capacity() * sizeof(float)
                       : sizeof(faiss::IndexIVFFlat);
        b += sizeof(*al) + al->ids.capacity() * sizeof(al->ids[0]) +
             al->codes.capacity() * sizeof(al->codes[0]);
        b += sizeof(faiss::IndexFlat) + q->codes.capacity();
        *bytes = b;
        return 0;
    } catch (...) {
        return -1;
    }
}

// What sc_faiss_ivf_fixed_bytes will say of an IVF index of nlist lists
// of dim (sq8: IVF-SQ8, else IVF-Flat) once trained: the same parts, each
// at its size (a training sizes each of them once, and a clone copies
// them): what ivf.c charges a training from its start (ivf.c's
// start_training), before the index exists.
extern "C" size_t sc_faiss_ivf_fixed_bound(int sq8, unsigned dim, size_t nlist)
{
    size_t b = sq8 ? sizeof(faiss::IndexIVFScalarQuantizer) +
                         2 * (size_t)dim * sizeof(float)
                   : sizeof(faiss::IndexIVFFlat);
    b += sizeof(faiss::ArrayInvertedLists) +
         nlist * (sizeof(std::vector<faiss::Index::idx_t>) +
                  sizeof(std::vector<uint8_t>));
    b += sizeof(faiss::IndexFlat) + nlist * (size_t)dim * sizeof(float);
    return b;
}
