// Awaiting store jobs from Asio coroutines.
//
// co_await store::async_run<T>(store, fn) hands fn to the writer thread and resumes the
// coroutine on its own executor once the batch holding fn has committed (or failed).
#pragma once

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <functional>
#include <memory>
#include <utility>

#include "store/store.hpp"

namespace repeaterd::store {

template <class T>
boost::asio::awaitable<Result<T>> async_run(Store& store, std::function<T(Db&)> fn) {
  auto initiate = [&store, fn = std::move(fn)](auto handler) mutable {
    auto ex = boost::asio::get_associated_executor(handler);
    // The handler is move-only; share it so the std::function-based completion can hold it.
    auto h = std::make_shared<decltype(handler)>(std::move(handler));
    store.run<T>(std::move(fn), [ex, h](Result<T> r) mutable {
      boost::asio::post(ex, [h, r = std::move(r)]() mutable { (*h)(std::move(r)); });
    });
  };
  co_return co_await boost::asio::async_initiate<decltype(boost::asio::use_awaitable), void(Result<T>)>(
      std::move(initiate), boost::asio::use_awaitable);
}

}  // namespace repeaterd::store
