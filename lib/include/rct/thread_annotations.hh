// Lock rules the compiler checks: clang's -Wthread-safety attributes and
// the mutex types that carry them (libstdc++'s do not). Members say which
// mutex guards them (GUARDED_BY), functions which locks they need
// (REQUIRES) or must not hold (EXCLUDES); a clang build with
// -Wthread-safety -Werror=thread-safety (meson.build turns it on for clang)
// rejects code that breaks them. Other compilers see plain mutexes.
#pragma once

#include <condition_variable>
#include <mutex>
#include <shared_mutex>

#if defined(__clang__)
#define RCT_TSA(x) __attribute__((x))
#else
#define RCT_TSA(x)
#endif

#define CAPABILITY(x) RCT_TSA(capability(x))
#define SCOPED_CAPABILITY RCT_TSA(scoped_lockable)
#define GUARDED_BY(x) RCT_TSA(guarded_by(x))
#define PT_GUARDED_BY(x) RCT_TSA(pt_guarded_by(x))
#define REQUIRES(...) RCT_TSA(requires_capability(__VA_ARGS__))
#define REQUIRES_SHARED(...) RCT_TSA(requires_shared_capability(__VA_ARGS__))
#define ACQUIRE(...) RCT_TSA(acquire_capability(__VA_ARGS__))
#define ACQUIRE_SHARED(...) RCT_TSA(acquire_shared_capability(__VA_ARGS__))
#define RELEASE(...) RCT_TSA(release_capability(__VA_ARGS__))
#define RELEASE_SHARED(...) RCT_TSA(release_shared_capability(__VA_ARGS__))
#define RELEASE_GENERIC(...) RCT_TSA(release_generic_capability(__VA_ARGS__))
#define EXCLUDES(...) RCT_TSA(locks_excluded(__VA_ARGS__))
#define NO_THREAD_SAFETY_ANALYSIS RCT_TSA(no_thread_safety_analysis)

namespace rct {

class CAPABILITY("mutex") mutex {
public:
    void lock() ACQUIRE() { m_.lock(); }
    void unlock() RELEASE() { m_.unlock(); }
    std::mutex& native() noexcept { return m_; }

private:
    std::mutex m_;
};

class CAPABILITY("shared_mutex") shared_mutex {
public:
    void lock() ACQUIRE() { m_.lock(); }
    void unlock() RELEASE() { m_.unlock(); }
    void lock_shared() ACQUIRE_SHARED() { m_.lock_shared(); }
    void unlock_shared() RELEASE_SHARED() { m_.unlock_shared(); }

private:
    std::shared_mutex m_;
};

// std::lock_guard over rct::mutex.
class SCOPED_CAPABILITY lock_guard {
public:
    explicit lock_guard(mutex& m) ACQUIRE(m) : m_(m) { m_.lock(); }
    ~lock_guard() RELEASE() { m_.unlock(); }
    lock_guard(const lock_guard&) = delete;
    lock_guard& operator=(const lock_guard&) = delete;

private:
    mutex& m_;
};

// A lock that can be dropped and retaken, and waited on with cond_var.
class SCOPED_CAPABILITY unique_lock {
public:
    explicit unique_lock(mutex& m) ACQUIRE(m) : l_(m.native()) {}
    ~unique_lock() RELEASE() {}
    void lock() ACQUIRE() { l_.lock(); }
    void unlock() RELEASE() { l_.unlock(); }
    std::unique_lock<std::mutex>& native() noexcept { return l_; }

private:
    std::unique_lock<std::mutex> l_;
};

class SCOPED_CAPABILITY exclusive_lock {
public:
    explicit exclusive_lock(shared_mutex& m) ACQUIRE(m) : m_(m) { m_.lock(); }
    ~exclusive_lock() RELEASE()
    {
        if (held_) {
            m_.unlock();
        }
    }
    void unlock() RELEASE()
    {
        m_.unlock();
        held_ = false;
    }
    exclusive_lock(const exclusive_lock&) = delete;
    exclusive_lock& operator=(const exclusive_lock&) = delete;

private:
    shared_mutex& m_;
    bool held_ = true;
};

class SCOPED_CAPABILITY shared_lock {
public:
    explicit shared_lock(shared_mutex& m) ACQUIRE_SHARED(m) : m_(m) { m_.lock_shared(); }
    ~shared_lock() RELEASE() { m_.unlock_shared(); }
    shared_lock(const shared_lock&) = delete;
    shared_lock& operator=(const shared_lock&) = delete;

private:
    shared_mutex& m_;
};

class cond_var {
public:
    void notify_one() noexcept { cv_.notify_one(); }
    void notify_all() noexcept { cv_.notify_all(); }
    template <typename Pred>
    void wait(unique_lock& l, Pred p)
    {
        cv_.wait(l.native(), p);
    }
    template <typename Clock, typename Duration, typename Pred>
    bool wait_until(unique_lock& l, const std::chrono::time_point<Clock, Duration>& t, Pred p)
    {
        return cv_.wait_until(l.native(), t, p);
    }

private:
    std::condition_variable cv_;
};

}  // namespace rct
