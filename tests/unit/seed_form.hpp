// The "Forward Form" example of CommCare's Data Forwarding page (seeds/001), as the unit
// tests of several components use it.
#pragma once

namespace repeaterd::testdata {

inline constexpr const char* kSeedForm = R"(<?xml version='1.0' ?>
<data uiVersion="1"
    version="10"
    name="Untitled Form"
    xmlns:jrm="http://dev.commcarehq.org/jr/xforms"
    xmlns="http://openrosa.org/formdesigner/B9C4EB51-A7CC-49B5-B7D5-10E9F10B450B">
  <question1>Trees</question1>
  <n0:case case_id="b0916685-7247-4c44-b712-633d3d64e0c0"
      date_modified="2015-04-17T16:04:54.950-04"
      user_id="d0e472a6b36dfd3ee5059222e12b8c1b"
      xmlns:n0="http://commcarehq.org/case/transaction/v2"><n0:create>
    <n0:case_name>Trees</n0:case_name>
    <n0:owner_id>d0e472a6b36dfd3ee5059222e12b8c1b</n0:owner_id>
    <n0:case_type>mscase</n0:case_type>
    </n0:create>
  </n0:case>
  <n1:meta xmlns:n1="http://openrosa.org/jr/xforms">
    <n1:deviceID>990005013558458</n1:deviceID>
    <n1:timeStart>2015-04-17T16:04:42.383-04</n1:timeStart>
    <n1:timeEnd>2015-04-17T16:04:54.950-04</n1:timeEnd>
    <n1:username>danny</n1:username>
    <n1:userID>d0e472a6b36dfd3ee5059222e12b8c1b</n1:userID>
    <n1:instanceID>afcb3026-c4b3-463f-85ec-0cb9a2737fc5</n1:instanceID>
    <n2:appVersion xmlns:n2="http://commcarehq.org/xforms">CommCare ODK, version "2.19.8"(350848). App v10. CommCare Version 2.19. Build 1000, built on: January-22-2015</n2:appVersion>
  </n1:meta>
</data>)";

}  // namespace repeaterd::testdata
